"""ROS 2 layer: node, image/message conversions, QoS and parameters. Imports rclpy."""
