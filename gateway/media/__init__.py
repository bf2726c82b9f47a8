"""What a session leaves behind: recordings, their retention, and the shared folder.

``recordings`` finalises, serves and chapters a session's recording; ``retention``
plans what to delete under the disk quota; ``files`` is the shared folder
(upload, list, download). Each module also registers its own routes.

May import: ``gateway.config``, ``gateway.errors``, ``gateway.appkeys``,
``gateway.sessions``, ``gateway.security``.
"""
