"""``xlcf serve``: an xlwings Server–compatible app (see :mod:`xlcf.server.app`)."""
