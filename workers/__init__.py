"""The worker processes of ordermesh: which consumer groups, relays and purges a process
hosts, composed from the messaging registry (:mod:`services.platform.messaging.registry`)
and each bounded context's bootstrap. The plumbing itself is in
:mod:`services.platform.messaging`; nothing here connects at import time.
"""
