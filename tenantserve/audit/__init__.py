"""The audit log: append-only, hash-chained records of every admin action and every
operator read of tenant data."""
