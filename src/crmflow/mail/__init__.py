"""Email formats: building the messages the CRM sends, parsing the ones it
receives, threading, address normalization and HTML sanitizing.

Pure functions over bytes and :mod:`crmflow.domain.mail` types; no network, no
database. Provider adapters use it to turn RFC 5322 bytes into
:class:`~crmflow.domain.mail.IncomingMessage` objects.
"""
