"""routing — collection planning and routed lists for waste crews.

Why a new top-level package: no existing stage owns *planning collection
rounds*.  ``simulators`` makes a town and its bins (and must stay free of
operational logic), ``ingest`` stores readings, ``alerts`` raises and routes
problems, ``api`` serves rows.  Deciding which bins to empty on a date, which
lorry empties them in which order (capacity, shift, breaks, time windows,
trips to the tipping site), re-planning when a street is blocked or a lorry
breaks down, and the crews' own lists are a capability of their own, with a
solver dependency (PyVRP; OR-Tools only as a benchmark baseline) none of the
other stages needs.

Layout (one concept per module):

| module | what |
|---|---|
| ``cvrplib.py`` | CVRPLIB X instances: reading, the rounded-Euclidean matrix, PyVRP and OR-Tools solvers |
| ``bench.py`` | ``bench_routing`` (PyVRP vs OR-Tools on X, gaps to BKS) and ``bench_collection`` |
| ``travel.py`` | travel-time / distance matrices from the town's ``StreetGraph`` (haversine fallback) |
| ``plan.py`` | pure core: stop selection with reasons, the PyVRP model, solving, re-planning |
| ``clock.py`` | the plan day's time axis: elapsed (UTC) seconds from local midnight in the council's zone |
| ``schedule.py`` | a route's timeline from the solver's order; the crew break placed by the drivers'-hours rule |
| ``fleet.py`` | the tenant's fleet configuration (YAML / ``fleet_configs``): vehicle types, shifts, breaks, sites, zone |
| ``town.py`` | a simulator fleet as planning input (tests, benches) |
| ``store.py`` | plans with their inputs in PostgreSQL (``ingest/schema/0007_routing.sql``), crew reports |
| ``service.py`` | plan / re-plan against the database (shared by CLI and API) |
| ``crew.py`` | the crew app (static HTML+JS), GPX / GeoJSON / SVG exports |
| ``cli.py`` | ``routes_plan_command`` (``streetsense routes plan``); re-exports the bench commands |

Commands (mounted by the lead)::

    streetsense routes plan --date 2026-03-02 --tenant demo-town [--fleet fleet.yaml] --json
                                                                             # routing.cli.routes_plan_command
    streetsense routes fleet --tenant demo-town --file fleet.yaml [--name default]   # routes_fleet_command
    streetsense bench routing --data ../shared/datasets/cvrplib_x --time-limit 60 --json [--instances 6]
                                                                             # routing.bench.bench_routing_command
    streetsense bench collection --scenario town.yaml --days 28 --json      # routing.bench.bench_collection_command
    python -c "from routing.bench import bench_plan_day; bench_plan_day(2000)"   # 2,000-bin planning time

``api/routes.py`` is the HTTP router (plans, fleets, re-planning, crew pages and reports); crew
reports go back into the models through ``alerts.runner``.  See ``docs/routing.md``.
"""
