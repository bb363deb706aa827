"""The entry points' logic, importable and installable without generic top-level names: ``srsnn.cli`` (training,
``train.py``), ``srsnn.pipeline``, ``srsnn.report``, ``srsnn.export`` and ``srsnn.infer``. In a clone the top-level
scripts of the same names call them; installed, the ``srsnn-*`` commands do."""
