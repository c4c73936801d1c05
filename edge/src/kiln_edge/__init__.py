"""kiln-edge: the agent that runs Kiln's compiled models on edge devices.

It depends on no part of the platform: it shares only the artifact manifest format.
"""

__version__ = "0.1.0"
