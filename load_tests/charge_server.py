"""The load tests' charge endpoint: the tools' charge double in a process of its own.

It stands in for the merchant's `charge_url` (docs/api.md, "The store's charge endpoint") and
approves every charge at once, one charge id per processor idempotency key. With
`--webhook-secret` it also verifies `X-Offer-Signature` and answers 401 to a bad one, as a real
merchant must.

    python load_tests/charge_server.py --port 8099 [--host 127.0.0.1] [--webhook-secret whsec_...]
"""

from __future__ import annotations

import sys

from offer_service_tools.charge_double import main

if __name__ == "__main__":
    sys.exit(main())
