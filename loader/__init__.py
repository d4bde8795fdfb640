"""flagsmith-warehouse: signed Flagsmith identity webhooks into a warehouse.

The package holds the receiver (Flask under gunicorn), the spool it writes, the dlt loader that
drains the spool, and the command line that runs them and dbt.
"""

__version__ = "0.1.0"
