"""Sans-I/O full ICE agent (RFC 8445) for one data stream with one or more components.

The agent never touches a socket or a clock.  The shell (``ice.aio``) gathers candidates, feeds
them in, moves datagrams and calls the timer; the agent runs the check list (``ice.checklist``),
nominates, and keeps consent (``ice.consent``, RFC 7675) on the selected pairs.

API summary (all times are ``now: float`` seconds on any monotonic clock)::

    agent = Agent(controlling=True, components=1, ta=0.05)   # tie_breaker, ufrag/pwd generated
    agent.local_ufrag, agent.local_pwd                        # for a=ice-ufrag / a=ice-pwd
    agent.add_local_candidate(cand, via)                      # via: the shell's socket id
    agent.add_local_candidate(srflx, via, base=(ip, port))    # same via as its host base
    agent.add_local_candidate(relay, turn_alloc_id)           # relayed: via = the allocation
    agent.local_candidates(component=None) -> list[Candidate] # for the SDP (no prflx)
    agent.set_remote_parameters(ufrag, pwd, lite=False)
    agent.add_remote_candidate(cand); agent.end_of_candidates()   # trickle-friendly
    agent.start(now)
    agent.receive(data, via, remote_addr, now) -> bool        # True: a STUN packet ICE consumed
    agent.datagrams_to_send() -> [(data, via, remote_addr)]   # send from socket/allocation via
    agent.get_timer() -> float | None ; agent.handle_timer(now)
    agent.next_event() -> AgentEvent | None
    agent.selected_pair(component) -> CandidatePair | None    # .via, .remote_address, .local, .remote
    agent.send_target(component) -> (via, remote_addr) | None # None if unselected or consent lost
    agent.is_from_selected(component, remote_addr, via=None) -> bool   # filter for media packets
    agent.component_of(via, remote_addr) -> int | None        # which component a datagram is for
    agent.restart(now)                                        # new ufrag/pwd; media stays on the old
                                                              # pair until the new nomination
    agent.close()                                             # stop everything (no more sends)
    agent.stats() -> AgentStats

``via`` is any hashable the shell chooses to name where a datagram leaves from or arrived on: a
host socket (host and server-reflexive candidates on that socket share it) or a TURN allocation
(relayed candidates; the shell wraps the data in Send/ChannelData towards ``remote_addr`` and
passes what the allocation delivers to :meth:`Agent.receive` with that allocation's ``via`` and
the peer address).  ``receive`` returns False for anything that is not for ICE (not STUN, or a
STUN response the agent did not ask for, e.g. a TURN response): offer it elsewhere.

Events (dataclasses): :class:`PairChecked`, :class:`PairNominated` (a component's selected pair,
also emitted again when it changes), :class:`Completed`, :class:`Failed`, :class:`RoleChanged`,
:class:`ConsentLost`.
"""
