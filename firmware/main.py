# StreetSense sensor node: see firmware/README.md.
from ss import app

app.main()
