"""S3 remote store for gaia checkpoints; boto3 is imported only when a backend is used."""

__version__ = "0.1.0"
