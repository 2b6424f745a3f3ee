"""What every benchmark shares, one module per job.

* :mod:`benchlib.options`: the command line (one :class:`~benchlib.options.Options` for every
  script) and the working directory.
* :mod:`benchlib.targets`: targets on 127.0.0.1 only: ``Nginx`` (Debian nginx-light, one
  worker, several listen ports, ``return 200 "ok"``, access log ``$msec $uri``) and
  ``DelayServer`` (bench/delay_server.py in its own process: answers after exactly N ms);
  endpoints files; which endpoint reached the target in which cycle (``slot_check``,
  ``coverage``).
* :mod:`benchlib.exporter`: the exporter as a real process (``Daemon``: ``python -m
  availability_exporter``), its scrapes and ``CycleWatcher``, which reads each cycle's probe
  durations from them.
* :mod:`benchlib.inprocess`: the daemon's own ``Exporter`` in this process, with an observer on
  its scheduler that keeps every ProbeResult (``run_in_process``).
* :mod:`benchlib.blackbox`: blackbox_exporter (``Blackbox``), driven through ``/probe`` on the
  exporter's own schedule by ``drive_blackbox``.
* :mod:`benchlib.machine`: binaries, versions, ports; CPU from ``/proc/PID/stat`` (utime +
  stime, all threads), memory from ``/proc/PID/status``; stopping a child process.
* :mod:`benchlib.report`: percentiles; the figures as a table, one verdict line per goal,
  optionally JSON.

Every wait here is bounded in time; every loop in count.  Each benchmark is one script in
bench/ and imports these modules by name (the script's directory is on ``sys.path``).
"""
