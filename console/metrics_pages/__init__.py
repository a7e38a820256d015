"""The metrics pages (supervisors and admins): the line's 988-style numbers for a period and
channel, with plots, the staffing view and a CSV download; every number links to its
definition. The numbers come from ``metrics`` (plain functions); this package only shows them."""
