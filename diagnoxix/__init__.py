"""Diagnoxix Notify: real-time notifications for clinics."""

__version__ = "0.6.0"
