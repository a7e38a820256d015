"""The supervisors' live board: who waits, in queue order, and where every responder is."""
