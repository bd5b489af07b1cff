"""agent-release: ship new versions of LLM agents safely.

The import package ``agent_release`` namespaces the project's three layers so they never collide with
other distributions' top-level names (``agents`` in particular is taken by a well-known SDK):

- ``agent_release.pipelines`` (``pipelines/``): config model, DAG, executor, backends, runtime, CLI.
- ``agent_release.steps`` (``steps/``): one module per pipeline step, typed input -> typed output.
- ``agent_release.agents`` (``agents/``): agent builders, tools, prompts, model providers.

Imports flow one way: pipelines -> steps -> agents (checked by import-linter in ``make test``).
"""

__version__ = "0.1.0"
