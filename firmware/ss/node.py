# The node runtime: stage/buffer readings, transmit in batches, keep status.
#
# Wake mode (bin_fill, air; ESP32 deep sleep, Pico lightsleep): wake() runs
# one wake -- sample if a slot is due, transmit if due or urgent -- and
# returns how long to sleep.  Continuous mode (noise, road): run() keeps
# three asyncio tasks: the sampler, the publisher and health (watchdog).
#
# Delivery is at-least-once and idempotent: a pack is cut from the ring at
# the cursor, marked in flight (on flash), published with QoS 1 and only
# dropped from the ring after the PUBACK.  If the link breaks in between, the
# same records go again under the same bseq, so the backend can discard the
# copy; nothing is lost and nothing new is ever sent under an old bseq.

import gc
import json
import asyncio
from contract import v1
from ss import VERSION
from ss import metrics as M
from ss.clock import EPOCH
from ss.ring import Ring, REC, RFMT, check
from ss.sched import Plan, seed_of, slot_of
from ss.state import (State, BOOTS, LAST_SAMPLE, LAST_TX, LAST_HEALTH, LAST_SYNC,
                      RETRY_AT, FAILS, ERRORS, E_WIFI, E_MQTT, E_SENSOR, NOTIME, URGENT, RSSI,
                      BAT_MV, POWER_ON)
import struct

_SYNC_S = 86400          # NTP at least daily
_MAX_PACKS = 64          # per session, bounds the time awake


class Node:
    def __init__(self, cfg, hw, clock, client_cls=None, ring_root="/ring"):
        self.cfg = cfg
        self.hw = hw
        self.clock = clock
        cad = cfg["cadence"]
        seed = seed_of(cfg["device_id"])
        self.plan = Plan(cad["sample_s"], cad["tx_s"], cad["health_s"], seed)
        self.state = State(hw.store, cad["stage"])
        self.ring = Ring(ring_root, cfg["ring_segments"], cfg["ring_seg_records"])
        self.batch = cfg["batch"]
        self._pbuf = bytearray(self.batch * REC)
        self.net = hw.wifi(cfg["wifi"], seed)
        from ss.link import Link
        self.link = Link(cfg, client_cls)
        from ss.kinds import sampler
        self.sampler = sampler(self)
        self.continuous = self.cfg["kind"] in ("noise", "road")
        self.sent = 0            # packs acknowledged (this boot)
        self.cfg_applied = 0

    # --- readings ------------------------------------------------------------
    def add(self, mid, q, t, ms=0):
        """Keep one quantized reading taken at device time t (+ ms)."""
        if not self.clock.valid or t <= 0:
            self.state.v[NOTIME] += 1
            return
        row = v1.BY_ID[mid]
        if not v1.in_range(row, q):
            self.state.error(E_SENSOR)
            return
        self.state.add(self.ring, mid, q, t, ms)

    def urgent(self):
        self.state.v[URGENT] = 1

    def buffered(self):
        return self.ring.count + self.state.n

    def dropped(self):
        return self.ring.dropped + self.state.v[NOTIME]

    async def wait(self, ms):
        """Sleep ms in steps, feeding the watchdog."""
        while ms > 0:
            d = 1000 if ms > 1000 else ms
            self.hw.feed()
            await self.clock.asleep_ms(d)
            ms -= d

    def health(self, t):
        v = self.state.v
        self.add(M.BAT_V, v[BAT_MV], t)
        self.add(M.RSSI, v[RSSI], t)
        self.add(M.UPTIME, t - v[POWER_ON] if v[POWER_ON] else 0, t)
        self.add(M.BUFFERED, self.buffered(), t)
        self.add(M.ERRORS, v[ERRORS], t)
        self.add(M.DROPPED, self.dropped(), t)
        v[LAST_HEALTH] = t

    # --- packs ---------------------------------------------------------------
    def encode(self, k):
        """Pack of the k records in _pbuf -> payload bytes (None if all were corrupt)."""
        b = self._pbuf
        recs = []
        bt = -1
        for i in range(k):
            off = i * REC
            if check(b, off) != b[off + 1]:
                self.ring.corrupt += 1
                continue
            mid, _, ms, t, q = struct.unpack_from(RFMT, b, off)
            row = v1.BY_ID.get(mid)
            if row is None:
                self.ring.corrupt += 1
                continue
            if bt < 0:
                bt = t
            recs.append((row[1], q, (t - bt) * 1000 + ms))
        if not recs:
            return None
        dev = self.cfg["device_id"]
        if self.cfg["format"] == "json":
            return v1.encode_json(dev, bt + EPOCH, self.ring.seq, recs)
        return v1.encode_cbor(dev, bt + EPOCH, self.ring.seq, recs)

    async def drain(self):
        ring = self.ring
        packs = 0
        while ring.count and packs < _MAX_PACKS:
            n = ring.inflight or min(self.batch, ring.count)
            ring.begin(n)
            k = ring.peek(self._pbuf, n)
            payload = self.encode(k)
            if payload is not None:
                self.link.publish(self.link.t_up, payload)
            ring.commit(k)
            payload = None
            gc.collect()
            self.sent += 1
            packs += 1
            self.hw.feed()
            await self.clock.asleep_ms(0)

    def status(self, state, next_wake):
        v = self.state.v
        nw = next_wake + EPOCH if next_wake else 0
        return v1.encode_status(state, VERSION, self.clock.now() + EPOCH, nw, v[BAT_MV],
                                v[RSSI], self.buffered(), v[ERRORS])

    def apply_cfg(self):
        msg = self.link.cfg_msg
        self.link.cfg_msg = None
        if not msg:
            return
        from ss import config as C     # loaded only when an update arrives
        rev = None
        try:
            upd = json.loads(msg)
            rev = upd.get("rev") if isinstance(upd, dict) else None
            new = C.merge_remote(self.cfg, upd)
        except (ValueError, C.ConfigError) as e:
            self.link.publish(self.link.t_ack, json.dumps({"cfg": rev, "ok": False, "error": str(e)}).encode())
            return
        if new is None:
            return
        try:
            C.save(new, self.hw.config_path)
        except OSError:
            pass
        self.cfg = new
        cad = new["cadence"]
        self.plan = Plan(cad["sample_s"], cad["tx_s"], cad["health_s"], self.plan.seed)
        self.batch = min(new["batch"], len(self._pbuf) // REC)
        self.cfg_applied = new["rev"]
        self.link.publish(self.link.t_ack, json.dumps({"cfg": new["rev"], "ok": True}).encode())

    # --- one transmission session ---------------------------------------------
    async def transmit(self, wifi=None):
        """Flush, connect, send everything (bounded), status, cfg.  True on success."""
        st = self.state
        v = st.v
        clock = self.clock
        self.hw.feed()
        ok = False
        try:
            up = await wifi if wifi is not None else await self.net.up()
            if not up:
                st.error(E_WIFI)
                raise OSError("wifi")
            v[RSSI] = self.net.rssi()
            now = clock.now()
            if not clock.valid or now - v[LAST_SYNC] >= _SYNC_S:
                if self.hw.ntp(self.cfg["ntp_host"], clock):
                    v[LAST_SYNC] = clock.now()
            if not clock.valid:
                raise OSError("no time")
            if not v[POWER_ON]:
                v[POWER_ON] = clock.now()
            now = clock.now()
            if self.plan.health_due(now, v[LAST_HEALTH]):
                self.health(now)
            st.flush(self.ring)
            link = self.link
            try:
                link.connect(self.status("offline", 0))
                link.publish(link.t_status, self.status("online", 0), retain=True)
                link.subscribe_cfg()
                link.poll()
                await self.drain()
                link.poll()
                self.apply_cfg()
                nxt = 0 if self.continuous else self.plan.next_wake(now, v[LAST_SAMPLE], now, 0, False)
                link.publish(link.t_status, self.status("online" if self.continuous else "sleeping", nxt),
                             retain=True)
                link.close()
            except (OSError, IndexError, AssertionError) as e:
                link.abort()
                st.error(E_MQTT)
                raise OSError(str(e))
            ok = self.ring.count == 0 and st.n == 0
            v[LAST_TX] = now
            v[FAILS] = 0
            v[RETRY_AT] = 0
            if ok:
                v[URGENT] = 0
        except OSError:
            v[FAILS] += 1
            v[RETRY_AT] = self.plan.retry_after(clock.now(), v[FAILS])
        finally:
            if not self.continuous:
                self.net.down()
        return ok

    # --- wake mode -----------------------------------------------------------
    async def wake(self):
        """One wake: sample if due, transmit if due.  Returns ms to sleep."""
        st = self.state
        v = st.v
        clock = self.clock
        clock.rebase()
        v[BOOTS] += 1
        now = clock.now()
        if clock.valid and not v[POWER_ON]:
            v[POWER_ON] = now
        plan = self.plan
        tx = (not clock.valid) or plan.tx_due(now, v[LAST_TX], v[RETRY_AT], v[URGENT])
        wifi = None
        if tx:
            v[BAT_MV] = self.hw.battery_mv()
            wifi = asyncio.create_task(self.net.up())      # joins while we sample
        if not clock.valid:
            # Time first (NTP): a reading without a time cannot be stored.
            await self.transmit(wifi)
            tx = False
            now = clock.now()
        if plan.sample_due(now, v[LAST_SAMPLE]) or not clock.valid:
            # (still no time: the readings are counted as dropped, not invented)
            if await self.sampler.sample(now):
                v[URGENT] = 1
            v[LAST_SAMPLE] = slot_of(now, plan.sample_s)
        if not tx and v[URGENT] and now >= v[RETRY_AT]:
            tx = True
            v[BAT_MV] = self.hw.battery_mv()
        if tx:
            await self.transmit(wifi)
        now = clock.now()
        nxt = plan.next_wake(now, v[LAST_SAMPLE], v[LAST_TX], v[RETRY_AT], v[URGENT])
        st.save()
        clock.stamp()
        return max(1000, (nxt - now) * 1000 - clock.ms)

    # --- continuous mode -------------------------------------------------------
    async def _publisher(self):
        st = self.state
        v = st.v
        clock = self.clock
        while True:
            await clock.asleep_ms(1000)
            now = clock.now()
            if now < v[RETRY_AT]:
                continue
            if not clock.valid or self.plan.tx_due(now, v[LAST_TX], v[RETRY_AT], v[URGENT]):
                v[BAT_MV] = self.hw.battery_mv()
                await self.transmit()
                st.save()

    async def _health(self):
        # Feed the hardware watchdog only while the sampler makes progress.
        clock = self.clock
        last = -1
        stuck = 0
        while True:
            beat = self.sampler.beat
            if beat != last:
                last = beat
                stuck = 0
                self.hw.feed()
            else:
                stuck += 1
                if stuck < 10:
                    self.hw.feed()
            await clock.asleep_ms(500)

    async def run(self):
        self.clock.rebase()
        self.state.v[BOOTS] += 1
        if self.clock.valid:
            self.state.v[POWER_ON] = self.clock.now()
        asyncio.create_task(self._health())
        asyncio.create_task(self._publisher())
        await self.sampler.run()
