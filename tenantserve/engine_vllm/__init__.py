"""vLLM servers that tenantserve starts and stops (`launcher.py`)."""
