"""Faces and the reenactment method, one room per concern: ``faces`` (landmarks, alignment, tracking, motion,
head pose, landmark images), ``media`` (video), ``data`` (dataset preparation, training pairs), ``model`` (the
mapping network and its training), ``evaluation`` (the thesis's metrics and tables), ``pipeline`` (what
reenact.py does) and ``app`` (the web page). It imports ``inversion`` and ``stylegan3``, never the reverse."""
