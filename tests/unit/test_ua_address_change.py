"""A new local address (the laptop moved to another network), in the sans-I/O core on a virtual
clock: which REGISTERs go out and with which Contacts, the old binding removed (RFC 3261
§10.2.2) or replaced (RFC 5626 §6), NAT state from the old network dropped (RFC 3581), and the
dialogs' next target refresh carrying the new Contact (RFC 3261 §12.2.1.1, §14.1)."""

from __future__ import annotations

from typing import Any

import pytest

from sip import invite as inv
from sip.message import Request, Response, make_response, new_tag
from sip.registration import (
    Registered,
    Registration,
    RegistrationFailed,
    RegistrationState,
)
from sip.ua import ROUTE_PROBES, UserAgent, choose_local_host, usable_local_host
from sip.uri import NameAddr
from tests.helpers_sip import (
    REGISTRAR_PROXY,
    FakeRegistrar,
    alice_and_registrar,
    bob_registration,
    in_a_call,
    register,
    with_registrar,
)
from tests.unit.test_ua import SDP_A, SDP_B, SimNet, auto_answer, make_ua

INSTANCE = "urn:uuid:00000000-0000-4000-8000-000000000002"


def move(net: SimNet, ua: UserAgent, host: str, **kw: Any) -> bool:
    """The UA's machine now has ``host`` instead of its old address (the network moves the
    node: packets to the old address are lost)."""
    old = (ua.config.local_host, ua.config.local_port)
    changed = ua.change_local_address(host, net.now, **kw)
    if changed:
        del net.nodes[old]
        net.nodes[(host, ua.config.local_port)] = ua
    return changed


def contacts(request: Request) -> list[tuple[str, str | None]]:
    out = []
    for value in request.headers.get_all("Contact"):
        c = NameAddr.parse(value)
        out.append((str(c.uri), c.params.get("expires")))
    return out


def registered_ua(**kw: Any) -> tuple[SimNet, UserAgent, FakeRegistrar]:
    """alice registered for 600 s (``nat``: the registrar's view of her address; the rest:
    more UAConfig fields)."""
    net, ua, registrar = alice_and_registrar(FakeRegistrar(nat=kw.pop("nat", None)), **kw)
    register(net, ua, 600)
    return net, ua, registrar


# ------------------------------------------------------------------------ registrations


@pytest.mark.parametrize("outbound", [False, True])
def test_new_address_registers_the_new_contact_and_removes_the_old(outbound):
    # (with outbound asked for but not confirmed by the registrar -- no Require: outbound --
    # the old binding is named too: a plain RFC 3261 registrar keys bindings by URI)
    net, ua, registrar = registered_ua(outbound=outbound)
    assert registrar.bindings == {"sip:alice@10.0.0.1:5060": 600}
    sent = len(registrar.requests)
    registered = len(net.of(ua, Registered))
    assert move(net, ua, "10.0.7.1")
    assert net.run(lambda: len(net.of(ua, Registered)) > registered)
    new = registrar.requests[sent:]
    assert new, "no REGISTER after the address change"
    first = new[0]
    # one REGISTER: the old URI removed (expires=0, no instance/reg-id), the new one bound
    assert contacts(first) == [
        ("sip:alice@10.0.0.1:5060", "0"),
        ("sip:alice@10.0.7.1:5060", "600"),
    ]
    removal = NameAddr.parse(first.headers.get_all("Contact")[0])
    assert "+sip.instance" not in removal.params and "reg-id" not in removal.params
    assert first.top_via.host == "10.0.7.1"
    assert first.call_id == registrar.requests[0].call_id  # the same registration (§10.2.4)
    assert registrar.bindings == {"sip:alice@10.0.7.1:5060": 600}
    assert ua.contact_uri() == "sip:alice@10.0.7.1:5060"
    assert not ua.recovering


def test_same_address_changes_nothing():
    net, ua, registrar = registered_ua()
    sent = len(registrar.requests)
    assert not ua.change_local_address("10.0.0.1", net.now)
    net.run(max_time=5)
    assert len(registrar.requests) == sent
    assert not ua.messages_to_send()


def test_not_registered_sends_no_register():
    net = SimNet()
    registrar = with_registrar(net)
    ua = make_ua("10.0.0.1", "alice", outbound_proxy=REGISTRAR_PROXY)
    net.add(ua)
    assert move(net, ua, "10.0.7.1")
    net.run(max_time=5)
    assert registrar.requests == []
    assert ua.contact_uri() == "sip:alice@10.0.7.1:5060"


def test_unregistered_binding_is_not_registered_again():
    net, ua, registrar = registered_ua()
    ua.unregister(net.now)
    net.run(max_time=5)
    assert registrar.bindings == {}
    sent = len(registrar.requests)
    assert move(net, ua, "10.0.7.1")
    net.run(max_time=60)
    assert len(registrar.requests) == sent
    assert registrar.bindings == {}


def test_nat_state_of_the_old_network_is_dropped_and_learned_again():
    net, ua, registrar = registered_ua(nat=("203.0.113.7", 40000))
    assert ua.public_host == "203.0.113.7"
    assert registrar.bindings == {"sip:alice@203.0.113.7:40000": 600}
    sent = len(registrar.requests)
    registered = len(net.of(ua, Registered))
    registrar.nat = ("198.51.100.20", 41000)  # the new network's NAT
    assert move(net, ua, "192.168.1.5")
    # at once: Via and Contact have the new private address, the old public one is gone
    assert ua.public_host is None
    assert ua.contact_uri() == "sip:alice@192.168.1.5:5060"
    assert net.run(lambda: len(net.of(ua, Registered)) > registered)
    first = registrar.requests[sent]
    assert contacts(first) == [
        ("sip:alice@203.0.113.7:40000", "0"),  # the binding the registrar had
        ("sip:alice@192.168.1.5:5060", "600"),
    ]
    # then the rewrite to the new public address (RFC 3581 received/rport)
    assert ua.public_host == "198.51.100.20"
    assert ua.contact_uri() == "sip:alice@198.51.100.20:41000"
    assert registrar.bindings == {"sip:alice@198.51.100.20:41000": 600}


def test_a_failing_registration_is_tried_at_once_from_the_new_address():
    net, ua, registrar = registered_ua()
    registrar.silent = True  # the old network is dead: the refresh times out
    net.run(lambda: bool(net.of(ua, RegistrationFailed)), max_time=600)
    (reg,) = ua.registrations
    assert reg.state is RegistrationState.FAILED and reg.retry_at is not None
    registrar.silent = False
    registered = len(net.of(ua, Registered))
    start = net.now
    assert move(net, ua, "10.0.7.1")
    assert net.run(lambda: len(net.of(ua, Registered)) > registered, max_time=5)
    assert net.now - start < 5  # not at the backoff's retry time
    assert registrar.bindings == {"sip:alice@10.0.7.1:5060": 600}


def test_register_in_flight_from_the_old_address_is_superseded():
    net, ua, registrar = registered_ua()
    (reg,) = ua.registrations
    reg.refresh_at = net.now  # a refresh goes out now...
    net.step()
    assert reg.state is RegistrationState.REGISTERING
    sent = len(registrar.requests)
    assert move(net, ua, "10.0.7.1")  # ... and the address changes before its answer
    net.run(lambda: reg.registered, max_time=10)
    assert registrar.bindings == {"sip:alice@10.0.7.1:5060": 600}
    assert [contacts(r)[-1][0] for r in registrar.requests[sent:]][-1] == (
        "sip:alice@10.0.7.1:5060"
    )


# ------------------------------------------------------------------------ RFC 5626 outbound


def outbound_registration() -> Registration:
    return bob_registration(instance_id=INSTANCE, reg_id=1)


def ok(req: Request, *, require: str | None = None) -> Response:
    resp = make_response(req, 200, to_tag=new_tag())
    for value in req.headers.get_all("Contact"):
        if NameAddr.parse(value).params.get("expires") != "0":
            resp.headers.add("Contact", value)
    if require is not None:
        resp.headers.add("Require", require)
    return resp


def test_outbound_binding_is_replaced_by_instance_and_reg_id():
    reg = outbound_registration()
    assert reg.handle_response(ok(reg.start(0.0), require="outbound"), 0.1) is None
    assert reg.registered and reg.outbound
    req = reg.change_contact("sip:bob@198.51.100.4:5070;transport=tcp", 5.0)
    assert req is not None
    (value,) = req.headers.get_all("Contact")  # RFC 5626 §6: the registrar replaces the flow
    contact = NameAddr.parse(value)
    assert str(contact.uri) == "sip:bob@198.51.100.4:5070;transport=tcp"
    assert contact.params["reg-id"] == "1"
    assert contact.params["+sip.instance"] == f'"<{INSTANCE}>"'
    assert reg.handle_response(ok(req, require="outbound"), 5.1) is None
    assert reg.registered
    events = []
    while (ev := reg.next_event()) is not None:
        events.append(ev)
    assert [type(e) for e in events] == [Registered, Registered]


def test_outbound_not_confirmed_names_the_old_binding():
    reg = outbound_registration()
    assert reg.handle_response(ok(reg.start(0.0)), 0.1) is None  # no Require: outbound
    req = reg.change_contact("sip:bob@198.51.100.4:5070;transport=tcp", 5.0)
    assert req is not None
    assert contacts(req) == [
        ("sip:bob@192.0.2.7:5070;transport=tcp", "0"),
        ("sip:bob@198.51.100.4:5070;transport=tcp", "3600"),
    ]
    # the refresh after the success no longer names it
    assert reg.handle_response(ok(req), 5.1) is None
    assert len(reg.build_request().headers.get_all("Contact")) == 1


def test_change_contact_when_not_wanted_only_keeps_it_for_later():
    reg = outbound_registration()
    assert reg.change_contact("sip:bob@198.51.100.4:5070", 1.0) is None
    assert reg.change_contact("sip:bob@198.51.100.4:5070", 1.0) is None  # same again
    req = reg.start(2.0)
    assert contacts(req) == [("sip:bob@198.51.100.4:5070", "3600")]


# ------------------------------------------------------------------------ dialogs


def call_between() -> tuple[SimNet, UserAgent, UserAgent]:
    net = SimNet()
    alice = make_ua("10.0.0.1", "alice")
    bob = make_ua("10.0.0.2", "bob")
    net.add(alice)
    net.add(bob, auto_answer(net, bob))
    alice.invite("sip:bob@10.0.0.2", SDP_A, net.now)
    assert net.run(lambda: bool(net.of(bob, inv.CallConfirmed)), max_time=30)
    return net, alice, bob


def test_reinvite_after_the_move_carries_the_new_contact_and_the_bye_reaches_it():
    net, alice, bob = call_between()
    (acall,) = alice.calls
    (bcall,) = bob.calls
    assert move(net, bob, "10.0.9.2")
    assert bcall.dialog is not None and "10.0.9.2" in bcall.dialog.local_contact
    bcall.reinvite(SDP_B, net.now)  # e.g. the application's ICE restart
    assert net.run(lambda: bool(net.of(bob, inv.CallUpdated)), max_time=30)
    reinvite = next(r for r in net.wire if r[3].startswith("INVITE") and r[1] == "10.0.9.2:5060")
    assert reinvite
    assert acall.dialog is not None
    assert acall.dialog.remote_target == "sip:bob@10.0.9.2:5060"
    acall.hangup(net.now)
    assert net.run(lambda: bool(net.of(bob, inv.CallEnded)), max_time=30)
    assert bcall.state is inv.CallState.TERMINATED
    (bye,) = net.sent_lines("BYE sip:")
    assert bye[2] == "10.0.9.2:5060" and not bye[4]


def test_without_a_target_refresh_the_peer_keeps_the_old_target():
    # the control for the test above: the move alone tells alice nothing
    net, alice, bob = call_between()
    (acall,) = alice.calls
    assert move(net, bob, "10.0.9.2")
    net.run(max_time=1)
    assert acall.dialog is not None and acall.dialog.remote_target == "sip:bob@10.0.0.2:5060"


def test_refresh_dialogs_sends_an_update_with_the_new_contact():
    net, alice, bob = call_between()
    (acall,) = alice.calls
    assert move(net, bob, "10.0.9.2", refresh_dialogs=True)
    assert net.run(
        lambda: acall.dialog is not None and acall.dialog.remote_target.endswith("10.0.9.2:5060"),
        max_time=10,
    )
    (update,) = net.sent_lines("UPDATE sip:")
    assert update[1] == "10.0.9.2:5060"
    assert not net.of(alice, inv.CallUpdated)  # a bodiless UPDATE changes no media
    acall.hangup(net.now)
    assert net.run(lambda: bool(net.of(bob, inv.CallEnded)), max_time=30)


def test_refresh_waits_for_the_registration_at_the_new_address():
    net, _alice, bob, registrar = in_a_call(600, outbound=False)
    registered = len(net.of(bob, Registered))
    assert move(net, bob, "10.0.9.2", refresh_dialogs=True)
    assert not net.sent_lines("UPDATE sip:")  # not before the registrar has the new contact
    assert net.run(lambda: bool(net.sent_lines("UPDATE sip:")), max_time=10)
    assert len(net.of(bob, Registered)) > registered
    first_update = net.sent_lines("UPDATE sip:")[0][0]
    last_register = max(w[0] for w in net.wire if w[3].startswith("REGISTER"))
    assert first_update >= last_register
    assert registrar.bindings == {"sip:bob@10.0.9.2:5060": 600}


def test_our_answer_to_the_peers_reinvite_carries_the_new_contact():
    net, alice, bob = call_between()
    (acall,) = alice.calls
    assert move(net, bob, "10.0.9.2")
    # alice still sends to the old address: lost; once bob's re-INVITE told her, it works
    (bcall,) = bob.calls
    bcall.reinvite(SDP_B, net.now)
    assert net.run(lambda: bool(net.of(bob, inv.CallUpdated)), max_time=30)
    net.run(max_time=2)  # (the ACK reaches alice)
    acall.reinvite(SDP_A, net.now)
    assert net.run(
        lambda: any(e.local for e in net.of(alice, inv.CallUpdated) if e.method == "INVITE"),
        max_time=30,
    )
    ok_line = [w for w in net.wire if w[3].startswith("SIP/2.0 200") and w[1] == "10.0.9.2:5060"]
    assert ok_line


# ------------------------------------------------------------------------ choosing an address


def test_usable_local_host():
    assert usable_local_host("192.0.2.5")
    assert usable_local_host("2001:db8::5")
    assert usable_local_host("[2001:db8::5]")
    for bad in ("127.0.0.1", "::1", "0.0.0.0", "::", "169.254.3.4", "fe80::1", "", None, "x"):
        assert not usable_local_host(bad), bad


def test_choose_local_host_prefers_the_first_usable_address():
    assert choose_local_host([None, "127.0.0.1", "169.254.1.1", "10.1.2.3", "10.9.9.9"]) == (
        "10.1.2.3"
    )
    assert choose_local_host([None, "127.0.1.1"]) == "127.0.0.1"
    assert choose_local_host([], fallback="") == ""
    assert all(usable_local_host(p) for p in ROUTE_PROBES)
