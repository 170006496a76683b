"""How the admin writes dates and times (en, and en-us by fallback): one
24-hour format with seconds everywhere, so that decisions a few seconds apart
read apart. Times are in the TIME_ZONE setting's zone (UTC)."""

DATETIME_FORMAT = "j M Y, H:i:s"
SHORT_DATETIME_FORMAT = "j M Y, H:i:s"
TIME_FORMAT = "H:i:s"
DATE_FORMAT = "j M Y"
SHORT_DATE_FORMAT = "j M Y"
