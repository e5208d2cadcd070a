"""Derived series: metrics computed on read from stored readings or rollups (NowCast, daily
AQI, DAQI, energy deltas, cost, CO2e). Each module registers its series in `base.REGISTRY`;
the range routes serve them like stored metrics."""
