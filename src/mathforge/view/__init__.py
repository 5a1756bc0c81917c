"""The run viewer: browse problems, samples, verdicts and rejects in a local web page (``mathforge view RUN``)."""

from mathforge.view.server import Viewer, make_server

__all__ = ["Viewer", "make_server"]
