"""The web app (top layer): labeling pages and API (labeling.py), the admin page (admin.py), the
dashboard of runs (dashboard.py), built by ``server.create_app``. Storage, assignment and quality
live below, web-free, in ``rlhf.feedback.labeling``."""
