"""Markers for viewers without plugins (Foxglove, RViz): mask outlines over the camera image
and a box per track in 3-D.

    image_markers  visualization_msgs/ImageMarker, one LINE_LIST per frame: every track's
                   outline and its '#id class' label (as line segments, outlines.py) in the
                   track's colour. One marker per frame, not one per track: Foxglove's Image
                   panel shows the latest ImageMarker of a topic.
    markers        visualization_msgs/MarkerArray: per track with a 3-D position a CUBE
                   (namespace 'tracks', id = track id) spanning its extent and a label
                   (namespace 'labels'); lifetime set; a track that is no longer in the frame
                   gets DELETE. Marker ids are int32: track ids above 2^31 - 1 are folded
                   ((id - 1) mod (2^31 - 1) + 1).
"""

from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Duration
from geometry_msgs.msg import Point
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import ImageMarker, Marker, MarkerArray

from metaseg_ros.outlines import outline_polygons, polygon_segments, text_segments
from metaseg_ros.results import TrackedFrame, TrackedInstance
from metaseg_ros.visualization import fold_track_id, track_color

MIN_BOX_SIZE = 0.02  # m: a flat object still shows as a thin box
LABEL_HEIGHT = 0.15  # m: text size of the 3-D labels
LABEL_PIXELS = 11    # height of the bitmap font's text, in font pixels


def _duration(seconds: float) -> Duration:
    whole = int(seconds)
    return Duration(sec=whole, nanosec=min(round((seconds - whole) * 1e9), 999_999_999))


def _color(track_id: int, alpha: float = 1.0) -> ColorRGBA:
    red, green, blue = track_color(track_id)
    return ColorRGBA(r=red / 255.0, g=green / 255.0, b=blue / 255.0, a=alpha)


def label_text(instance: TrackedInstance) -> str:
    """What a track is labelled with: '#id class'."""
    return f"#{instance.track_id} {instance.class_name}"


def image_marker_scale(width: int) -> float:
    """Line width (and text pixel size) in image pixels for an image `width` wide."""
    return float(max(1, round(width / 640)))


def image_marker_msg(frame: TrackedFrame, header: Header, lifetime: float) -> ImageMarker:
    """One LINE_LIST marker with every track's outline and '#id class' label."""
    scale = image_marker_scale(frame.width)
    points: list[Point] = []
    colors: list[ColorRGBA] = []
    for instance in frame.instances:
        segments = [polygon_segments(polygon)
                    for polygon in outline_polygons(instance.mask, instance.bbox)]
        top = max(instance.bbox.y - (LABEL_PIXELS + 1) * scale, 0.0)
        segments.append(text_segments(label_text(instance), float(instance.bbox.x), top, scale))
        color = _color(instance.track_id)
        for x, y in np.concatenate(segments).reshape(-1, 2).tolist():
            points.append(Point(x=x, y=y, z=0.0))
            colors.append(color)
    return ImageMarker(header=header, ns="metaseg", id=0, type=ImageMarker.LINE_LIST,
                       action=ImageMarker.ADD, scale=scale, outline_color=ColorRGBA(a=1.0),
                       filled=0, lifetime=_duration(lifetime), points=points,
                       outline_colors=colors)


def marker_id(track_id: int) -> int:
    """The int32 marker id of a track."""
    return fold_track_id(track_id, "32SC1")


class TrackMarkers:
    """MarkerArrays for the tracks of one camera; remembers what it showed to delete it."""

    def __init__(self) -> None:
        self.shown: set[int] = set()

    def forget(self) -> None:
        """Nothing is shown (nobody subscribed: deletions would reach nobody)."""
        self.shown = set()

    def msg(self, frame: TrackedFrame, header: Header, lifetime: float) -> MarkerArray:
        """Boxes and labels of this frame's tracks with 3-D; DELETE for those gone."""
        markers = []
        current = set()
        for instance in frame.instances:
            geometry = instance.geometry
            if geometry is None or not geometry.valid:
                continue
            ident = marker_id(instance.track_id)
            current.add(ident)
            low, high = np.array(geometry.extent_min), np.array(geometry.extent_max)
            center, size = (low + high) / 2.0, np.maximum(high - low, MIN_BOX_SIZE)
            box = Marker(header=header, ns="tracks", id=ident, type=Marker.CUBE,
                         action=Marker.ADD, lifetime=_duration(lifetime),
                         color=_color(instance.track_id, 0.5))
            box.pose.position = Point(x=float(center[0]), y=float(center[1]),
                                      z=float(center[2]))
            box.pose.orientation.w = 1.0
            box.scale.x, box.scale.y, box.scale.z = (float(v) for v in size)
            label = Marker(header=header, ns="labels", id=ident, type=Marker.TEXT_VIEW_FACING,
                           action=Marker.ADD, lifetime=_duration(lifetime),
                           color=_color(instance.track_id), text=label_text(instance))
            label.pose.position = Point(x=float(center[0]), y=float(low[1]) - LABEL_HEIGHT,
                                        z=float(center[2]))
            label.pose.orientation.w = 1.0
            label.scale.z = LABEL_HEIGHT
            markers += [box, label]
        for ident in sorted(self.shown - current):
            markers += [Marker(header=header, ns=ns, id=ident, action=Marker.DELETE)
                        for ns in ("tracks", "labels")]
        self.shown = current
        return MarkerArray(markers=markers)
