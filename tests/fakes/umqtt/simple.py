# Fake umqtt.simple: the same MQTTClient interface as micropython-lib's,
# talking to an in-memory broker instead of a socket.
#
# The broker prints every message it accepts as "PUB <topic> <retain> <hex>"
# (and "WILL ..." when a client vanishes without DISCONNECT), which is how the
# Python side of the tests collects what a node sent.  Failure injection:
# world.wifi_ok() false -> OSError on every operation; lose_ack = {n, ...}: the
# broker accepts the n-th publish but the PUBACK never arrives (OSError).

import world
from binascii import hexlify


class MQTTException(Exception):
    pass


class Broker:
    def __init__(self):
        self.retained = {}
        self.echo = True
        self.keep = True
        self.log = []              # (topic, retain, payload)
        self.n_pub = 0
        self.lose_ack = set()
        self.users = None          # {user: password} to enforce, or None
        self.connects = 0
        self.wills = 0
        self.subs = {}             # client -> [topics]

    def accept(self, topic, msg, retain):
        self.n_pub += 1
        if retain:
            self.retained[topic] = msg
        if self.keep:
            self.log.append((topic, retain, msg))
        if self.echo:
            print("PUB", world.now_ms, topic, 1 if retain else 0, hexlify(msg).decode())
        for c, topics in self.subs.items():
            if topic in topics:
                c._inbox.append((topic, msg))


BROKER = Broker()


class _Sock:
    def __init__(self, client):
        self.client = client

    def close(self):
        self.client._vanish()


class MQTTClient:
    def __init__(self, client_id, server, port=0, user=None, password=None, keepalive=0,
                 ssl=None, ssl_params=None):
        self.client_id = client_id
        self.server = server
        self.port = port
        self.user = user
        self.pswd = password
        self.keepalive = keepalive
        self.ssl = ssl
        self.cb = None
        self.lw = None
        self.sock = None
        self.pid = 0
        self._inbox = []

    def set_callback(self, f):
        self.cb = f

    def set_last_will(self, topic, msg, retain=False, qos=0):
        assert 0 <= qos <= 2
        assert topic
        self.lw = (topic, msg, retain)

    def _check(self):
        if self.sock is None:
            raise OSError(-1)
        if not world.wifi_ok():
            self._vanish()
            raise OSError(113)

    def connect(self, clean_session=True):
        if not world.wifi_ok():
            raise OSError(113)         # EHOSTUNREACH
        b = BROKER
        if b.users is not None and b.users.get(self.user) != self.pswd:
            raise MQTTException(5)     # not authorised
        b.connects += 1
        self.sock = _Sock(self)
        b.subs[self] = []
        return 0

    def _vanish(self):
        if self.sock is None:
            return
        self.sock = None
        b = BROKER
        b.subs.pop(self, None)
        if self.lw:
            b.wills += 1
            if b.echo:
                print("WILL", world.now_ms, self.lw[0], hexlify(self.lw[1]).decode())
            if self.lw[2]:
                b.retained[self.lw[0]] = self.lw[1]

    def disconnect(self):
        self._check()
        BROKER.subs.pop(self, None)
        self.sock = None

    def ping(self):
        self._check()

    def publish(self, topic, msg, retain=False, qos=0):
        self._check()
        if isinstance(topic, str):
            topic = topic
        else:
            topic = topic.decode()
        b = BROKER
        b.accept(topic, bytes(msg), retain)
        if qos and b.n_pub in b.lose_ack:
            self._vanish()
            raise OSError(104)         # connection reset before PUBACK
        self.pid += 1

    def subscribe(self, topic, qos=0):
        assert self.cb is not None, "Subscribe callback is not set"
        self._check()
        if not isinstance(topic, str):
            topic = topic.decode()
        BROKER.subs[self].append(topic)
        m = BROKER.retained.get(topic)
        if m is not None:
            self._inbox.append((topic, m))

    def wait_msg(self):
        self._check()
        if not self._inbox:
            return None
        topic, msg = self._inbox.pop(0)
        self.cb(topic.encode(), msg)
        return 0x30

    def check_msg(self, attempts=2):
        return self.wait_msg()
