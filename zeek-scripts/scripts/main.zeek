##! bnn-sidecar: publish every logged connection as a fixed-layout BNN::Flow
##! record to a topic that bnn-sidecar subscribes to over Zeek's WebSocket API,
##! and turn the sidecar's BNN::verdict events into BNN::Malicious_Flow notices
##! (and, when enabled, NetControl drops).
##!
##! Zeek 6.0 - 7.1: Broker::listen_websocket (port 9997/tcp by default, TLS on
##! unless Broker::disable_ssl), Broker::publish / Broker::subscribe.
##! Zeek 7.2: Cluster::listen_websocket with $listen_host (plain ws unless
##! $tls_options), Cluster::publish / Cluster::subscribe.
##! Zeek 8.0 and later: the same with $listen_addr ($listen_host is deprecated
##! in 8.0 and gone later); Broker::listen_websocket is gone from 8.1.
##! The calls are chosen with @if on Version::number.

@load base/misc/version
@load base/frameworks/notice
@load base/frameworks/netcontrol
@load base/protocols/conn

module BNN;

export {
	redef enum Notice::Type += {
		## The sidecar's model (and its second stage) flagged this connection.
		Malicious_Flow,
		## The sidecar's flood rule flagged this connection (stage 3): its
		## originator sent many connections to the same service within
		## 1-2 s; the model alone called it benign.
		Flood,
		## The sidecar's guessing rule flagged this login session (stage 4):
		## its originator opened many login sessions (SSH, FTP, telnet, ...)
		## to the same service within 1-2 min; the model alone called it
		## benign.
		Password_Guessing,
	};

	## The wire layout the sidecar decodes. Fixed on purpose: packages that add
	## conn.log fields cannot shift it. Unset values stay unset (never 0).
	type Flow: record {
		ts: time;
		uid: string;
		id: conn_id;
		proto: transport_proto;
		service: string &optional;
		duration: interval &optional;
		orig_bytes: count &optional;
		resp_bytes: count &optional;
		conn_state: string &optional;
		history: string &optional;
		orig_pkts: count &optional;
		orig_ip_bytes: count &optional;
		resp_pkts: count &optional;
		resp_ip_bytes: count &optional;
	};

	## Topic the flows are published to. With num_instances > 1 each flow goes
	## to "<flow_topic>/<i>-of-<num_instances>", where i is picked from the
	## originator address by highest-random-weight (rendezvous) hashing, so all
	## flows of one originator reach the same sidecar instance and adding an
	## instance moves only about 1/num_instances of the originators. (The
	## "-of-N" suffix keeps one instance's topic from being a prefix of
	## another's: Broker subscriptions are prefix matches.)
	const flow_topic = "zeek/bnn/flows" &redef;

	## Topic the sidecar publishes BNN::verdict events to.
	const verdict_topic = "zeek/bnn/verdicts" &redef;

	## Flows per BNN::flows event (1 = one BNN::flow event per connection).
	const batch_size: count = 64 &redef;

	## A partial batch is flushed after this long.
	const batch_interval: interval = 100msec &redef;

	## Number of sidecar instances; each originator's flows go to one of them.
	const num_instances: count = 1 &redef;

	## Open the WebSocket listener from this script.
	const listen_websocket: bool = T &redef;

	## Where the WebSocket listener binds.
	const websocket_addr: addr = 127.0.0.1 &redef;

	## WebSocket port: 9997/tcp was Broker's default; 27759/tcp is what
	## zeekctl uses with Cluster::listen_websocket.
	const websocket_port: port = 27759/tcp &redef;

	## Call NetControl::drop_address for flagged originators.
	const enable_drop: bool = F &redef;

	## How long a NetControl drop lasts.
	const drop_duration: interval = 10min &redef;

	## Never drop these networks (sensor, gateways, DNS servers, ...).
	const never_block: set[subnet] = {} &redef;

	## The same originator and class is noticed at most once per this interval.
	const notice_suppress: interval = 1hr &redef;

	## One flow (batch_size == 1).
	global flow: event(f: Flow);

	## A batch of flows.
	global flows: event(fs: vector of Flow);

	## A verdict from the sidecar.
	global verdict: event(uid: string, id: conn_id, score: double, cls: string,
	    stage: count, model: string);

	## Flushes a partial batch (scheduled internally).
	global flush: event();
}

global pending: vector of Flow;
global pending_topic: vector of string;
global flush_scheduled = F;

## Rendezvous (highest-random-weight) choice of a sidecar instance for an
## originator. Cluster::hrw_topic does the same over Zeek cluster node pools,
## but WebSocket clients are not pool members, so the weights are computed here.
function instance_of(a: addr): count
	{
	local best = 0;
	local best_w = 0;
	local i = 0;
	while ( i < num_instances )
		{
		# 16 hex digits = 8 bytes, a width bytestring_to_count accepts.
		local h = md5_hash(cat(a, "/", i));
		local w = bytestring_to_count(hexstr_to_bytestring(h[0:16]));
		if ( i == 0 || w > best_w )
			{
			best = i;
			best_w = w;
			}
		++i;
		}
	return best;
	}

function instance_topic(a: addr): string
	{
	if ( num_instances <= 1 )
		return flow_topic;

	return fmt("%s/%d-of-%d", flow_topic, instance_of(a), num_instances);
	}

function send(topic: string, fs: vector of Flow)
	{
@if ( Version::number >= 70200 )
	if ( |fs| == 1 && batch_size <= 1 )
		Cluster::publish(topic, BNN::flow, fs[0]);
	else
		Cluster::publish(topic, BNN::flows, fs);
@else
	if ( |fs| == 1 && batch_size <= 1 )
		Broker::publish(topic, BNN::flow, fs[0]);
	else
		Broker::publish(topic, BNN::flows, fs);
@endif
	}

function flush_all()
	{
	local by_topic: table[string] of vector of Flow;
	local i = 0;
	while ( i < |pending| )
		{
		local t = pending_topic[i];
		if ( t !in by_topic )
			by_topic[t] = vector();
		by_topic[t] += pending[i];
		++i;
		}
	for ( topic, fs in by_topic )
		send(topic, fs);
	pending = vector();
	pending_topic = vector();
	}

event BNN::flush()
	{
	flush_scheduled = F;
	flush_all();
	}

event zeek_init()
	{
@if ( Version::number >= 80000 )
	if ( listen_websocket )
		Cluster::listen_websocket([$listen_addr=websocket_addr,
		    $listen_port=websocket_port]);
	Cluster::subscribe(verdict_topic);
@else
@if ( Version::number >= 70200 )
	if ( listen_websocket )
		Cluster::listen_websocket([$listen_host=cat(websocket_addr),
		    $listen_port=websocket_port]);
	Cluster::subscribe(verdict_topic);
@else
	if ( listen_websocket )
		Broker::listen_websocket(cat(websocket_addr), websocket_port);
	Broker::subscribe(verdict_topic);
@endif
@endif
	}

event Conn::log_conn(rec: Conn::Info)
	{
	local f = Flow($ts=rec$ts, $uid=rec$uid, $id=rec$id, $proto=rec$proto);
	if ( rec?$service )
		f$service = rec$service;
	if ( rec?$duration )
		f$duration = rec$duration;
	if ( rec?$orig_bytes )
		f$orig_bytes = rec$orig_bytes;
	if ( rec?$resp_bytes )
		f$resp_bytes = rec$resp_bytes;
	if ( rec?$conn_state )
		f$conn_state = rec$conn_state;
	if ( rec?$history )
		f$history = rec$history;
	if ( rec?$orig_pkts )
		f$orig_pkts = rec$orig_pkts;
	if ( rec?$orig_ip_bytes )
		f$orig_ip_bytes = rec$orig_ip_bytes;
	if ( rec?$resp_pkts )
		f$resp_pkts = rec$resp_pkts;
	if ( rec?$resp_ip_bytes )
		f$resp_ip_bytes = rec$resp_ip_bytes;

	pending += f;
	pending_topic += instance_topic(rec$id$orig_h);
	if ( |pending| >= batch_size )
		flush_all();
	else if ( ! flush_scheduled )
		{
		flush_scheduled = T;
		schedule batch_interval { BNN::flush() };
		}
	}

event zeek_done()
	{
	flush_all();
	}

event BNN::verdict(uid: string, id: conn_id, score: double, cls: string,
    stage: count, model: string)
	{
	if ( stage == 3 )
		NOTICE([$note=Flood, $uid=uid, $id=id, $msg=fmt(
		    "flood rule flagged flow as %s (model score %.3f)", cls,
		    score), $sub=fmt("stage=%d model=%s", stage, model),
		    $identifier=cat(id$orig_h, "-", cls),
		    $suppress_for=notice_suppress]);
	else if ( stage == 4 )
		NOTICE([$note=Password_Guessing, $uid=uid, $id=id, $msg=fmt(
		    "guessing rule flagged login session as %s (model score %.3f)",
		    cls, score), $sub=fmt("stage=%d model=%s", stage, model),
		    $identifier=cat(id$orig_h, "-", cls),
		    $suppress_for=notice_suppress]);
	else
		NOTICE([$note=Malicious_Flow, $uid=uid, $id=id, $msg=fmt(
		    "BNN flagged flow as %s (score %.3f)", cls, score),
		    $sub=fmt("stage=%d model=%s", stage, model),
		    $identifier=cat(id$orig_h, "-", cls),
		    $suppress_for=notice_suppress]);

	if ( enable_drop && id$orig_h !in never_block )
		NetControl::drop_address(id$orig_h, drop_duration);
	}
