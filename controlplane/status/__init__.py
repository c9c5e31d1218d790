"""Status back to the custom resources: conditions, observedGeneration, Events (``writer``),
built by pure functions (``conditions``); only the kopf peering leader writes (``leader``)."""
