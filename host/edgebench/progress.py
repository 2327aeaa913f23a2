"""Progress of runs on boards: a rich bar per board, fed by the agent's events (CLI and `progress=True` in the API)."""

from __future__ import annotations


class DeployProgress:
    """A progress line per board, fed by the agent's events; silent when stderr is not a terminal."""

    def __init__(self, console, names: list[str]):
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(TextColumn("{task.fields[name]:<28}"), BarColumn(), TextColumn("{task.description}"),
                                 TimeElapsedColumn(), console=console, transient=True,
                                 disable=not console.is_terminal)
        self.tasks = {name: self.progress.add_task("waiting", total=1.0, name=name) for name in names}

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def say(self, name: str, message: str) -> None:
        """A line that stays (a labgrid place acquired, a wait for one), printed above the bars."""
        from .results.schema import printable

        self.progress.console.print(printable(f"{name}: {message}"), markup=False, highlight=False, soft_wrap=True)

    def event(self, name: str, event: dict) -> None:
        task = self.tasks.get(name)
        if task is None:  # a labgrid place, known once the coordinator gave it
            task = self.tasks[name] = self.progress.add_task("waiting", total=1.0, name=name)
        kind = event.get("event")
        if event.get("model"):
            self.progress.update(task, name=f"{name}: {event['model']}")
        if kind == "upload":
            self.progress.update(task, completed=event["done"] / max(event["total"], 1),
                                 description=f"upload {event['done'] / 2**20:.1f}/{event['total'] / 2**20:.1f} MiB")
        elif kind == "lock_wait":
            self.progress.update(task, description=f"waiting for the board's lock ({event.get('holder') or 'busy'})")
        elif kind == "reconnected":
            self.progress.update(task, description=f"link dropped: reconnected (try {event['attempt']})")
        elif kind == "phase":
            self.progress.update(task, description=f"{event['phase']} {event['repeat']}/{event['repeats']}")
        elif kind == "progress":
            done = min(event["iterations"] / max(event["min_iterations"], 1),
                       event["elapsed_s"] / max(event["min_seconds"], 1e-9))
            self.progress.update(task, completed=min(done, 1.0),
                                 description=f"measure: {event['iterations']} iterations")
        elif kind == "done":
            self.progress.update(task, completed=1.0, description=event["status"])
