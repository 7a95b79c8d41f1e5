"""``emvos app``: annotate, propagate and correct masks in the browser.

- :mod:`emvos.app.workspace`: the folder that keeps a video's frames, annotations and results.
- :mod:`emvos.app.jobs`: one background job at a time, with progress and cancellation.
- :mod:`emvos.app.session`: opening videos, propagation (and its re-propagation semantics), export.
- :mod:`emvos.app.server`: the Flask application and its HTTP API; the page is in ``static/``.
- :mod:`emvos.app.cli`: the ``emvos app`` command.

The server needs Flask (``pip install 'emvos[app]'``); the other modules do not.
"""
