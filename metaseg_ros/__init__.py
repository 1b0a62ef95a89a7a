"""metaseg_ros: video instance segmentation with persistent track IDs for ROS 2.

The generated message module ``metaseg_ros.msg`` and the Python sources may live in
two directories of the same package name (the message build's install prefix and the
source tree). Extending ``__path__`` lets ``metaseg_ros.msg`` and ``metaseg_ros.model``
import together whichever of the two Python finds first.
"""

from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
__version__ = "0.1.0"
