"""Production pipelines for consequential tabular models on Prefect 3 and MLflow 3.

Plain Python: nothing here needs Prefect to be tested, and nothing runs at import time.
"""

__version__ = "0.1.0"
