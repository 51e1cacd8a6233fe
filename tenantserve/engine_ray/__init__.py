"""Built-in engine pools as Ray Serve deployments (`tenantserve up --engine ray`).

Needs the `ray` extra (`ray[serve]`); nothing here is imported unless that backend is
chosen. Ray places, replicates, autoscales and restarts the replicas; the gateway stays
the front door (auth, admission, scheduling, metering).
"""
