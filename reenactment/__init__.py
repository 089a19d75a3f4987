"""Faces and reenactment: landmarks (``landmarks``), alignment (``align``), landmark images, smoothing, image and
video I/O, dataset preparation (``prepare``), the mapping network (``mapper``), its data and training, the
pipeline behind reenact.py (``pipeline``), and evaluation (``metrics``, ``head_pose``, ``evaluation``)."""
