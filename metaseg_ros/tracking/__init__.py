"""Persistent track identities across frames (no ROS)."""
