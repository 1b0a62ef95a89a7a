"""ROS 2 layer: node, messages, parameters (import rclpy), and the plain-Python pieces they
use: image conversions, the keep-latest slot, the launch command line."""
