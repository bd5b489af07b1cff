"""Helpers shared by the test directories (see ``mlflow_server``)."""
