"""`zfleet demo`: a whole simulated fleet on one machine, its scenario, and its verification.

``fleet`` brings processes up and always down; ``scenario`` builds and changes the data;
``verify`` compares every target against the source; ``run`` strings them together.
"""
