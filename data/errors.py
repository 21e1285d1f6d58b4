"""The one error of this package: data missing or malformed."""


class DatasetError(ValueError):
    """Data that is missing or malformed; the message says where it looked and how to fix it."""
