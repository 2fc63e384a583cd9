"""Airflow's plugins folder for the tests: registers kit's timetable, as in a deployment."""

from kit.airflow import KitPlugin

__all__ = ["KitPlugin"]
