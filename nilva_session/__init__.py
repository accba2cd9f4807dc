"""nilva-session: revocable, per-device user sessions for Django REST Framework."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("nilva-session")
except PackageNotFoundError:  # running from a checkout that is not installed
    __version__ = "0.0.0"
