"""Per-pool scheduling in front of the engine: tier priority with aging, VTC fair share
between tenants, overload shedding, noisy-neighbour detection."""

from tenantserve.scheduling.fair_queue import FairQueue, FairQueueConfig
from tenantserve.scheduling.noisy_neighbor import (
    NoisyNeighborConfig,
    NoisyNeighborDetector,
    NoisyNeighborEvent,
)
from tenantserve.scheduling.queue_types import (
    FairQueueStats,
    Grant,
    Overloaded,
    QueueFull,
    Shed,
    SlotUsage,
    Ticket,
)
from tenantserve.scheduling.vtc import VirtualTokenCounter

__all__ = [
    "FairQueue",
    "FairQueueConfig",
    "FairQueueStats",
    "Grant",
    "NoisyNeighborConfig",
    "NoisyNeighborDetector",
    "NoisyNeighborEvent",
    "Overloaded",
    "QueueFull",
    "Shed",
    "SlotUsage",
    "Ticket",
    "VirtualTokenCounter",
]
