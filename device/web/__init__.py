"""The technician's page (``waste-sorter web``): what the bin sees, what it sorted today, and
labelling its captures in a browser. Standard library only (http.server): the sorter's own
process imports nothing of it; the sorter's side is :mod:`device.frame_preview`.

    server.py    the HTTP server: routes, limits, the token check, one-line errors
    tokens.py    per-session tokens that every write carries (a cross-site post has none)
    sources.py   what the pages show: the status file, the latest frame, today's sort log
    labelling.py the capture queue, biggest doubt first; labels and undo
    pages.py     the HTML of the three pages
    plots.py     the Today page's bar charts as inline SVG
"""
