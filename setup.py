"""Python packaging of metaseg_ros (the pure-Python parts; `pip install .` needs no ROS).

On a ROS 2 install, colcon builds the package through CMakeLists.txt (build type
ament_cmake), which also generates and installs the messages (metaseg_ros.msg).
"""

from setuptools import find_packages, setup

setup(
    name="metaseg_ros",
    version="0.1.0",
    description="MetaSegmenter video instance segmentation with persistent track IDs for ROS 2",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["metaseg_ros", "metaseg_ros.*"]),
    include_package_data=True,
    package_data={"metaseg_ros": ["weights/*.safetensors", "weights/*.json", "weights/*.md",
                                  "resources/*"]},
    install_requires=[
        "torch>=2.4",
        "numpy>=1.26",  # the oldest tested: requirements/py310.txt
        "scipy>=1.10",
        "threadpoolctl>=3.1",
        "safetensors>=0.4",
        "PyYAML>=6",
        "pillow>=10",
    ],
    extras_require={
        "onnx": ["onnx>=1.16", "onnxscript>=0.2", "onnxruntime>=1.18"],
        "convert": ["transformers>=4.40", "huggingface_hub>=0.20"],
        "eval": ["pycocotools>=2.0.7", "motmetrics>=1.4", "rosbags>=0.10"],
        # metaseg-replay / metaseg-make-bag: bags (also cut short), report plots, videos.
        "replay": ["rosbags>=0.10", "mcap>=1.1", "pycocotools>=2.0.7", "motmetrics>=1.4",
                   "matplotlib>=3.7", "av>=12", "tqdm>=4.60"],
        "train": ["tensorboard>=2.14", "tqdm>=4.60", "imgviz>=1.7", "scikit-image>=0.22",
                  "pycocotools>=2.0.7", "motmetrics>=1.4", "rosbags>=0.10"],
    },
    # The message definitions, where bag reading (metaseg_ros/data/bag_format.py) finds them when
    # the package is installed without ROS.
    data_files=[("share/metaseg_ros/msg", ["msg/InstanceMask.msg", "msg/InstanceMaskArray.msg"])],
    entry_points={
        "console_scripts": [
            "metaseg_node = metaseg_ros.ros.node:main",
            "metaseg_lifecycle_node = metaseg_ros.ros.lifecycle_node:main",
            "metaseg-demo = metaseg_ros.cli.demo:main",
            "metaseg-convert = metaseg_ros.cli.convert:main",
            "metaseg-export = metaseg_ros.cli.export:main",
            "metaseg-train = metaseg_ros.cli.train:main",
            "metaseg-make-synthetic = metaseg_ros.cli.make_synthetic:main",
            "metaseg-eval = metaseg_ros.eval.evaluate:main",
            "metaseg-replay = metaseg_ros.cli.replay:main",
            "metaseg-make-bag = metaseg_ros.cli.make_bag:main",
        ],
    },
)
