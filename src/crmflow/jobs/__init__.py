"""Background work: scheduled syncs of every connected calendar and mailbox.

* :mod:`.tasks`: the task functions (one scheduled sync of one account, run
  as its owner) that every runner calls;
* :mod:`.runner`: the in-process runner of the embedded default (SQLite):
  ``crmflow serve`` and ``crmflow demo`` run it beside the web app, so the
  CRM stays in sync with no worker process.
"""
