"""The shared result schema and errors: the bottom layer, imported by every other package and importing none.

``models`` holds the typed report (``AdviceResult`` and its parts, the run report, the prediction
report); ``errors`` the exceptions every layer raises (the CLI maps them onto exit codes);
``run_options`` what ``--run`` is asked to train.
"""
