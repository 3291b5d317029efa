# MQTT link: QoS 1 publishing, retained status with a last will, the retained
# cfg topic.  The client class is micropython-lib's umqtt.simple.MQTTClient
# (``mip install umqtt.simple``) or anything with its interface, passed in as
# ``client_cls`` so the tests can hand over a fake transport.

from contract import v1


def _ssl_context(ca):
    try:
        import tls as ssl
    except ImportError:
        import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca:
        with open(ca, "rb") as f:
            ctx.load_verify_locations(cadata=f.read())
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class Link:
    def __init__(self, cfg, client_cls=None):
        m = cfg["mqtt"]
        self.m = m
        self.dev = cfg["device_id"]
        self.t_up = v1.topic(cfg["tenant"], self.dev, v1.UP)
        self.t_status = v1.topic(cfg["tenant"], self.dev, v1.STATUS)
        self.t_cfg = v1.topic(cfg["tenant"], self.dev, v1.CFG)
        self.t_ack = v1.topic(cfg["tenant"], self.dev, v1.ACK)
        if client_cls is None:
            from umqtt.simple import MQTTClient as client_cls
        self.cls = client_cls
        self.c = None
        self.cfg_msg = None          # last payload seen on the cfg topic

    def _cb(self, topic, msg):
        if topic == self.t_cfg.encode() or topic == self.t_cfg:
            self.cfg_msg = msg

    def connect(self, will):
        m = self.m
        ssl = _ssl_context(m["ca"]) if m["tls"] else None
        c = self.cls(self.dev, m["host"], port=m["port"], user=m["username"],
                     password=m["password"], keepalive=m["keepalive"], ssl=ssl)
        c.set_callback(self._cb)
        c.set_last_will(self.t_status, will, retain=True, qos=1)
        c.connect()
        self.c = c

    def subscribe_cfg(self):
        self.c.subscribe(self.t_cfg, qos=1)

    def publish(self, topic, payload, retain=False):
        self.c.publish(topic, payload, retain=retain, qos=1)

    def poll(self, n=5):
        """Handle up to n pending incoming messages without blocking."""
        for _ in range(n):
            if self.c.check_msg() is None:
                break

    def close(self):
        c, self.c = self.c, None
        if c is not None:
            try:
                c.disconnect()
            except OSError:
                pass

    def abort(self):
        """Drop the connection without DISCONNECT (the broker sends the will)."""
        c, self.c = self.c, None
        if c is not None:
            try:
                c.sock.close()
            except Exception:
                pass
