#!/usr/bin/env python3
"""The custom-criminalip test suite: the product's behaviour, as integratord and the manager see it.

Every test gets its own temporary Wazuh home (script in integrations/, a live AF_UNIX datagram
socket at queue/sockets/queue, logs/, var/) and its own fake Criminal IP server on 127.0.0.1.
The script always runs as a separate process, with argv laid out the way integratord lays it out.
Run: python3 selftest.py   (make check runs it under every CPython 3.8-3.13 it finds)
"""
import configparser
import json
import os
import pwd
import re
import shutil
import socket
import ssl
import stat
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import xml.etree.ElementTree as ElementTree
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

REPO = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(REPO, 'custom-criminalip')
SAMPLES = os.path.join(REPO, 'tests', 'samples')
TLS_CERT = os.path.join(REPO, 'tests', 'tls', 'localhost.pem')    # self-signed, test use only
TLS_KEY = os.path.join(REPO, 'tests', 'tls', 'localhost.key')
KEY = 'cip-test-key-7f3a9c2e5b'
TOR_IP = '185.220.101.7'
CLEAN_IP = '9.9.9.9'
DAY = 86400
SYNC = 'test-sync-marker'
NOON = 1_780_000_000 - 1_780_000_000 % DAY + DAY // 2     # a fixed UTC noon for the test clock



def sample(name: str) -> dict:
    with open(os.path.join(SAMPLES, name), encoding='utf-8') as handle:
        return json.load(handle)


def clean_report(ip: str) -> dict:
    """The real 2024 capture: all flags false, Safe/Safe, no is_anonymous_vpn key."""
    report = sample('asset_ip_report_9.9.9.9_2024-03.json')
    report['ip'] = ip
    return report


def risky_report(ip: str, inbound='Critical', outbound='Moderate', **flags) -> dict:
    """The documentation example, with the scores and flags a test wants."""
    report = sample('asset_ip_report_docs_example.json')
    report['ip'] = ip
    report['score'] = {'inbound': inbound, 'outbound': outbound}
    report['issues'].update(flags)
    return report


class FakeCriminalIP:
    """A Criminal IP look-alike on 127.0.0.1 that counts requests and answers what a test says."""

    def __init__(self, tls: bool = False):
        self.requests = []
        self.answers = {}            # ip -> list of answers, the last one repeats
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                parts = urlsplit(self.path)
                ip = parse_qs(parts.query).get('ip', [''])[0]
                fake.requests.append({'path': parts.path, 'ip': ip, 'key': self.headers.get('x-api-key'),
                                      'agent': self.headers.get('User-Agent'), 'target': self.path})
                queue = fake.answers.get(ip) or [{'body': clean_report(ip)}]
                answer = queue.pop(0) if len(queue) > 1 else queue[0]
                time.sleep(answer.get('delay', 0))
                body = answer.get('raw')
                if body is None:
                    body = json.dumps(answer['body']).encode()
                self.send_response(answer.get('status', 200))
                for name, value in answer.get('headers', {}).items():
                    self.send_header(name, value)
                if 'Content-Length' not in answer.get('headers', {}):
                    self.send_header('Content-Length', str(len(body)))
                self.end_headers()
                for start in range(0, len(body), 65536):
                    self.wfile.write(body[start:start + 65536])
                    time.sleep(answer.get('drip', 0))

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.server.daemon_threads = True
        self.server.handle_error = lambda request, address: None   # clients hanging up is expected
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(TLS_CERT, TLS_KEY)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.url = f'{"https" if tls else "http"}://127.0.0.1:{self.server.server_port}'
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def answer(self, ip: str, *answers: dict) -> None:
        self.answers[ip] = list(answers)

    def calls(self, ip: str = None) -> int:
        return len([r for r in self.requests if ip is None or r['ip'] == ip])

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class WazuhHome:
    """A temporary /var/ossec with the script installed and a live queue socket."""

    def __init__(self, api: FakeCriminalIP):
        self.api = api
        self.path = tempfile.mkdtemp(prefix='cip-')
        for folder in ('integrations', 'logs', 'queue/sockets', 'var', 'etc'):
            os.makedirs(os.path.join(self.path, folder))
        self.script = os.path.join(self.path, 'integrations', 'custom-criminalip')
        shutil.copy(SCRIPT, self.script)
        self.socket_path = os.path.join(self.path, 'queue', 'sockets', 'queue')
        self.cache_dir = os.path.join(self.path, 'var', 'criminalip')
        self.received = []
        self.open_queue()
        self.options = {'api_url': api.url, 'deadline': 10}
        self.clock = None
        self.retries = '3'

    def open_queue(self) -> None:
        """Bind the queue socket and collect every datagram in a background thread."""
        self.queue = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.queue.bind(self.socket_path)
        self.queue.settimeout(0.05)
        self.collecting = True
        self.synced = threading.Event()
        self.collector = threading.Thread(target=self.collect, daemon=True)
        self.collector.start()

    def collect(self) -> None:
        while self.collecting:
            try:
                message = self.queue.recv(70000).decode()
            except socket.timeout:
                continue
            except OSError:
                return
            if message.startswith(SYNC):
                self.synced.set()
            else:
                self.received.append(message)

    def close_queue(self) -> None:
        self.collecting = False
        self.collector.join()
        self.queue.close()
        os.unlink(self.socket_path)

    def close(self) -> None:
        if self.collecting:
            self.close_queue()
        shutil.rmtree(self.path, ignore_errors=True)

    def write(self, name: str, content) -> str:
        path = os.path.join(self.path, name)
        with open(path, 'w', encoding='utf-8') as handle:
            handle.write(content if isinstance(content, str) else json.dumps(content))
        return path

    def argv(self, alert_file: str, key: str, layout: str, options_file: str, debug=False) -> list:
        """argv exactly as each integratord version builds it (see the reference table)."""
        flag = 'debug' if debug else ''
        if layout == '4.3':
            return [self.script, alert_file, key, '', 'debug' if debug else ' > /dev/null 2>&1']
        if layout == '4.7':
            return [self.script, alert_file, key, '', flag, options_file, '> /dev/null 2>&1']
        return [self.script, alert_file, key, '', flag, options_file, '10', self.retries,
                '> /dev/null 2>&1']

    def start(self, alert, key=KEY, layout='4.8', debug=False, env=None):
        """Start one integratord-style run; returns the Popen."""
        alert_file = self.write(f'alert-{time.monotonic_ns()}.alert',
                                alert if isinstance(alert, str) else json.dumps(alert))
        options_file = self.write(f'run-{time.monotonic_ns()}.options', self.options)
        environment = dict(os.environ, **(env or {}))
        if self.clock is not None:
            environment['CRIMINALIP_TEST_NOW'] = str(self.clock)
        return subprocess.Popen([sys.executable] + self.argv(alert_file, key, layout, options_file, debug),
                                cwd=self.path, env=environment, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def run(self, alert, **kwargs):
        """One run to completion: (exit code, output, seconds); new datagrams land in .received."""
        started = time.monotonic()
        process = self.start(alert, **kwargs)
        output, _ = process.communicate(timeout=120)
        self.settle()
        return process.returncode, output.decode(), time.monotonic() - started

    def settle(self) -> None:
        """Wait until the collector has read everything sent so far (datagrams keep their order)."""
        if not self.collecting:
            return
        self.synced.clear()
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
            sender.sendto(SYNC.encode(), self.socket_path)
        self.synced.wait(10)

    def events(self) -> list:
        return [json.loads(message.partition('criminalip:')[2])['criminalip'] for message in self.received]

    def log(self) -> str:
        try:
            with open(os.path.join(self.path, 'logs', 'integrations.log'), encoding='utf-8') as handle:
                return handle.read()
        except FileNotFoundError:
            return ''

    def command(self, *args, env=None):
        environment = dict(os.environ, **(env or {}))
        if self.clock is not None:
            environment['CRIMINALIP_TEST_NOW'] = str(self.clock)
        done = subprocess.run([sys.executable, self.script] + list(args), cwd=self.path, env=environment,
                              stdin=subprocess.DEVNULL, capture_output=True, timeout=120)
        return done.returncode, done.stdout.decode(), done.stderr.decode()


def alert_for(ip=TOR_IP, field='srcip', agent=None, **extra) -> dict:
    """A typical sshd alert carrying ip in data.<field>."""
    alert = {'timestamp': '2026-12-04T10:00:00.000+0000', 'id': '1733306400.12345',
             'rule': {'id': '5710', 'level': 5, 'description': 'sshd: Attempt to login using a '
                      'non-existent user', 'groups': ['syslog', 'sshd', 'invalid_login']},
             'agent': agent or {'id': '000', 'name': 'manager'}, 'manager': {'name': 'manager'},
             'full_log': 'mangled by another integration', 'data': {field: ip, 'srcuser': 'root'}}
    alert.update(extra)
    return alert


class IntegrationTestCase(unittest.TestCase):
    def setUp(self):
        self.api = FakeCriminalIP()
        self.home = WazuhHome(self.api)

    def tearDown(self):
        self.home.close()
        self.api.close()

    def run_ok(self, alert=None, **kwargs) -> list:
        """Run once, expect exit 0, return the events this run sent."""
        before = len(self.home.received)
        code, output, _ = self.home.run(alert or alert_for(), **kwargs)
        self.assertEqual(code, 0, output + self.home.log())
        return self.home.events()[before:]

    def assertLogged(self, text: str) -> None:
        self.assertIn(text, self.home.log())


# ==============================================================================================
# Issue 2: the integration enriches a Wazuh alert end to end
# ==============================================================================================

class ArgumentsAndOptions(IntegrationTestCase):
    def test_every_integratord_argument_layout_is_understood(self):
        self.api.answer(TOR_IP, {'body': risky_report(TOR_IP, is_tor=True)})
        self.home.write('etc/custom-criminalip.json', self.home.options)   # 4.3-4.6: no <options>
        for layout in ('4.3', '4.7', '4.8'):
            with self.subTest(layout=layout):
                events = self.run_ok(layout=layout)
                self.assertEqual([e['ip'] for e in events], [TOR_IP])
                self.assertTrue(events[0]['is_tor'])

    def test_timeout_and_retries_arguments_are_honoured_without_an_options_file(self):
        self.home.write('etc/custom-criminalip.json', {'api_url': self.api.url, 'deadline': 8})
        self.api.answer(TOR_IP, {'delay': 5, 'body': clean_report(TOR_IP)})
        alert_file = self.home.write('t.alert', alert_for())
        started = time.monotonic()
        done = subprocess.run([sys.executable, self.home.script, alert_file, KEY, '', '', '', '1', '0',
                               '> /dev/null 2>&1'], capture_output=True, text=True)
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertLess(time.monotonic() - started, 4, '<timeout> 1 and <retries> 0 cut the wait')
        self.home.settle()
        self.assertEqual((self.home.events()[0]['error'], self.api.calls()), ('unavailable', 1))

    def test_debug_argument_writes_detail_lines(self):
        self.run_ok(alert_for(data={'srcip': '10.0.0.1'}), debug=True)
        self.assertIn('DEBUG: data.srcip: 10.0.0.1 skipped: not a global address', self.home.log())

    def test_missing_alert_argument_is_a_clear_usage_error(self):
        done = subprocess.run([sys.executable, self.home.script], capture_output=True, text=True)
        self.assertEqual(done.returncode, 2)
        self.assertIn('usage: custom-criminalip ALERT_FILE', done.stderr)
        self.assertNotIn('Traceback', done.stderr)

    def test_no_api_key_anywhere_exits_3(self):
        code, output, _ = self.home.run(alert_for(), key='')
        self.assertEqual(code, 3)
        self.assertIn('no API key', output)
        self.assertEqual(self.api.calls(), 0)

    def test_api_key_file_keeps_the_key_off_the_command_line(self):
        key_file = self.home.write('etc/criminalip.key', KEY + '\n')
        self.home.options['api_key_file'] = key_file
        self.run_ok(key='')
        self.assertEqual(self.api.requests[0]['key'], KEY)

    def test_unreadable_api_key_file_exits_3(self):
        self.home.options['api_key_file'] = os.path.join(self.home.path, 'missing.key')
        code, output, _ = self.home.run(alert_for(), key='')
        self.assertEqual(code, 3)
        self.assertIn('cannot read api_key_file', output)

    def test_options_from_etc_json_are_overridden_by_the_options_argument(self):
        self.home.write('etc/custom-criminalip.json', {'api_url': 'https://x.invalid', 'max_ips_per_alert': 1})
        data = {'srcip': '45.9.148.1', 'dstip': '45.9.148.2'}
        self.assertEqual(len(self.run_ok(alert_for(data=data))), 1, 'max_ips_per_alert from etc/')
        self.assertEqual(self.api.calls(), 1, 'api_url from <options> wins over etc/')

    def test_malformed_options_file_is_reported_and_defaults_are_used(self):
        alert_file = self.home.write('a.alert', alert_for(data={'srcip': '10.0.0.1'}))
        options = self.home.write('bad.options', '{"api_url": ')
        done = subprocess.run([sys.executable, self.home.script, alert_file, KEY, '', '', options,
                               '10', '3'], capture_output=True, text=True)
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertLogged('options file')
        self.assertLogged('ignored: Expecting value')

    def test_unknown_and_mistyped_options_are_logged_and_ignored(self):
        self.home.options.update(colour='blue', max_ips_per_alert='three')
        self.run_ok()
        self.assertLogged('unknown option "colour" ignored')
        self.assertLogged('option "max_ips_per_alert" must be a whole number; using the default')

    def test_plain_http_to_a_remote_host_is_refused_before_connecting(self):
        self.home.options['api_url'] = 'http://api.criminalip.invalid'
        code, output, _ = self.home.run(alert_for())
        self.assertEqual(code, 4)
        self.assertIn('reserved and never resolves', output)
        self.home.options['api_url'] = 'http://criminalip.example.invalid.test'
        code, output, _ = self.home.run(alert_for())
        self.assertEqual(code, 4)
        self.assertIn('uses plain http', output)

    def test_https_to_an_impossible_host_name_is_refused(self):
        self.home.options['api_url'] = 'https://api.criminalip.invalid'
        self.assertEqual(self.home.run(alert_for())[0], 4)
        self.home.options.update(api_url=self.api.url, proxy='http://proxy.corp.invalid:3128')
        self.assertEqual(self.home.run(alert_for())[0], 4)


class AlertInput(IntegrationTestCase):
    def test_missing_alert_file_exits_6(self):
        done = subprocess.run([sys.executable, self.home.script, '/nonexistent/x.alert', KEY, ''],
                              capture_output=True, text=True)
        self.assertEqual(done.returncode, 6)
        self.assertIn('cannot read alert file', done.stderr)

    def test_broken_alert_files_exit_7_with_a_reason(self):
        for content, reason in (('', 'is empty'), ('{"rule": ', 'neither JSON nor integratord text'),
                                ('[1, 2]', 'not an object'), ('\x00\xff garbage', 'neither JSON'),
                                ('[' * 100000, 'neither JSON')):
            with self.subTest(content=content):
                code, output, _ = self.home.run(content)
                self.assertEqual(code, 7)
                self.assertIn(reason, output)
                self.assertNotIn('Traceback', output)

    def test_alert_without_data_has_nothing_to_look_up(self):
        self.assertEqual(self.run_ok({'rule': {'id': '1'}, 'id': 'x'}), [])
        self.assertLogged('no IP to look up')
        self.assertEqual(self.api.calls(), 0)

    def test_odd_ip_values_are_skipped_and_only_global_ipv4_is_looked_up(self):
        odd = {'srcip': 1234, 'dstip': ['185.220.101.1'], 'src_ip': 'not-an-ip',
               'dst_ip': '2606:4700::1111', 'client_ip': '100.64.1.1',
               'win': {'eventdata': {'ipAddress': '::ffff:185.220.101.9', 'sourceIp': '192.168.1.4',
                                     'destinationIp': '[::ffff:45.9.148.3]:443',
                                     'sourceAddress': '224.0.0.5', 'destAddress': '127.0.0.1'}},
               'aws': {'sourceIPAddress': '169.254.169.254', 'srcaddr': '0.0.0.0'}}
        events = self.run_ok(alert_for(data=odd), debug=True)
        self.assertEqual([(e['ip'], e['direction']) for e in events],
                         [('185.220.101.9', 'inbound'), ('45.9.148.3', 'outbound')])
        log = self.home.log()
        self.assertIn('data.srcip: "1234" is not an IP address', log)
        self.assertIn('data.dst_ip: 2606:4700::1111 skipped: IPv6', log)
        self.assertIn('data.client_ip: 100.64.1.1 skipped: not a global address', log)

    def test_ports_brackets_and_whitespace_are_handled(self):
        events = self.run_ok(alert_for(data={'srcip': ' 185.220.101.3:51234 ', 'dstip': '185.220.101.3'}))
        self.assertEqual([(e['ip'], e['direction']) for e in events], [('185.220.101.3', 'inbound')])
        self.assertEqual(self.api.calls(), 1, 'duplicates are looked up once')

    def test_ignore_networks_and_the_per_alert_cap(self):
        self.home.options.update(ignore_networks=['185.220.0.0/16', 'bogus'], max_ips_per_alert=2)
        data = {'srcip': '185.220.101.1', 'dstip': '45.9.148.1', 'src_ip': '45.9.148.2',
                'dst_ip': '45.9.148.3'}
        events = self.run_ok(alert_for(data=data))
        self.assertEqual([e['ip'] for e in events], ['45.9.148.2', '45.9.148.1'], 'ip_fields order')
        self.assertLogged('ignore_networks entry "bogus" is not a network')

    def test_custom_ip_fields_decide_direction_by_name(self):
        self.home.options['ip_fields'] = ['data.firewall.dest_address', 'data.firewall.peer']
        events = self.run_ok(alert_for(data={'firewall': {'dest_address': '45.9.148.7',
                                                          'peer': '45.9.148.8'}}))
        self.assertEqual([(e['ip'], e['direction'], e['source']['field']) for e in events],
                         [('45.9.148.7', 'outbound', 'data.firewall.dest_address'),
                          ('45.9.148.8', 'inbound', 'data.firewall.peer')])

    def test_legacy_text_alert_still_works_and_says_how_to_fix_it(self):
        text = ("alertdate='2026 Dec 04 10:00:00'\nalertlocation='/var/log/secure'\nruleid='5710'\n"
                "alertlevel='5'\nruledescription='sshd: attempt'\nalertlog='Dec  4 sshd[1]: x'\n"
                f"srcip='{TOR_IP}'")
        events = self.run_ok(text)
        self.assertEqual([e['ip'] for e in events], [TOR_IP])
        self.assertEqual(events[0]['source']['rule_id'], '5710')
        self.assertLogged('<alert_format>json</alert_format>')

    def test_our_own_alerts_are_never_looked_up(self):
        own = [{'rule': {'id': '100625', 'groups': ['criminalip', 'tor']}, 'data': {'srcip': TOR_IP}},
               {'rule': {'id': '100625'}, 'data': {'integration': 'criminalip', 'srcip': TOR_IP}}]
        for alert in own:
            self.assertEqual(self.run_ok(alert), [])
        self.assertEqual(self.api.calls(), 0)


class ApiCall(IntegrationTestCase):
    def test_request_carries_key_header_and_product_user_agent(self):
        self.run_ok()
        request = self.api.requests[0]
        self.assertEqual((request['path'], request['ip'], request['key']),
                         ('/v1/asset/ip/report', TOR_IP, KEY))
        self.assertRegex(request['agent'], r'^custom-criminalip/\d+\.\d+\.\d+')

    def test_documentation_example_becomes_a_complete_event(self):
        self.api.answer(TOR_IP, {'body': risky_report(TOR_IP)})
        event = self.run_ok()[0]
        self.assertEqual((event['score'], event['score_inbound'], event['score_outbound']),
                         ('Critical', 'Critical', 'Moderate'))
        self.assertEqual((event['is_hosting'], event['is_snort'], event['is_anonymous_vpn'],
                          event['is_tor']), (True, True, True, False))
        self.assertEqual((event['as_name'], event['country']), ('MICROSOFT-CORP-MSN-AS-BLOCK', 'US'))
        self.assertEqual(event['flags'], 'anonymous_vpn,snort,hosting')
        self.assertIn('Critical', event['summary'])
        self.assertEqual(event['report_url'], f'https://www.criminalip.io/asset/report/{TOR_IP}')
        self.assertIs(event['cached'], False)
        self.assertEqual(event['source']['rule_id'], '5710')

    def test_real_capture_without_is_anonymous_vpn_has_every_flag_false(self):
        event = self.run_ok(alert_for(CLEAN_IP))[0]
        for flag in ('is_vpn', 'is_tor', 'is_proxy', 'is_darkweb', 'is_anonymous_vpn', 'is_scanner',
                     'is_snort', 'is_hosting', 'is_cloud', 'is_mobile'):
            self.assertIs(event[flag], False, flag)
        self.assertEqual((event['score'], event['flags']), ('Safe', 'none'))

    def test_destination_ips_are_judged_by_outbound_score(self):
        self.api.answer('45.9.148.3', {'body': risky_report('45.9.148.3', 'Safe', 'Critical')})
        event = self.run_ok(alert_for('45.9.148.3', field='dstip'))[0]
        self.assertEqual((event['direction'], event['score']), ('outbound', 'Critical'))

    def test_legacy_integer_scores_map_to_names(self):
        report = clean_report(TOR_IP)
        report['score'] = {'inbound': 5, 'outbound': 1}
        self.api.answer(TOR_IP, {'body': report})
        event = self.run_ok()[0]
        self.assertEqual((event['score_inbound'], event['score_outbound']), ('Critical', 'Safe'))

    def assertErrorEvent(self, answers, code, calls=1):
        self.api.answer(TOR_IP, *answers)
        events = self.run_ok()
        self.assertEqual(len(events), 1, events)
        self.assertEqual((events[0]['error'], events[0]['ip']), (code, TOR_IP))
        self.assertEqual(self.api.calls(), calls)
        self.assertNotIn(KEY, json.dumps(events) + self.home.log())
        return events[0]

    def test_errors_reported_with_http_200_are_classified_from_the_body(self):
        cases = [({'status': 401, 'message': 'invalid api key'}, 'auth'),
                 ({'status': '403', 'message': 'Forbidden'}, 'quota'),
                 ({'status': 503, 'message': 'maintenance'}, 'unavailable'),
                 ({'status': 403, 'message': 'limit exceeded'}, 'quota'),
                 ({'status': 400, 'message': 'Invalid IP Address.'}, 'invalid_ip'),
                 ({'status': 200, 'ip': TOR_IP}, 'bad_response')]
        for body, code in cases:
            with self.subTest(code=code):
                self.tearDown()
                self.setUp()
                self.home.retries = '0'                 # classification only; retries tested below
                event = self.assertErrorEvent([{'body': body}], code)
                self.assertTrue(event['error_message'])

    def test_http_error_codes_are_classified(self):
        for status, code in ((401, 'auth'), (403, 'quota'), (400, 'invalid_ip'), (404, 'bad_response')):
            with self.subTest(status=status):
                self.tearDown()
                self.setUp()
                self.assertErrorEvent([{'status': status, 'body': {'message': 'nope'}}], code)

    def test_outages_are_retried_with_backoff_then_succeed(self):
        self.api.answer(TOR_IP, {'status': 503, 'raw': b'<html>down</html>'},
                        {'body': {'status': 500, 'message': 'internal error'}},
                        {'body': risky_report(TOR_IP, is_tor=True)})
        events = self.run_ok()
        self.assertEqual(self.api.calls(), 3)
        self.assertTrue(events[0]['is_tor'])

    def test_persistent_outage_becomes_one_unavailable_event(self):
        self.home.options['deadline'] = 5
        self.assertErrorEvent([{'status': 502, 'raw': b'bad gateway'}], 'unavailable', calls=4)

    def test_rate_limit_honours_retry_after(self):
        self.api.answer(TOR_IP, {'status': 429, 'headers': {'Retry-After': '1'}, 'body': {}},
                        {'body': {'status': 429, 'message': 'unable to call api at the same time'}},
                        {'body': clean_report(TOR_IP)})
        started = time.monotonic()
        events = self.run_ok()
        self.assertGreaterEqual(time.monotonic() - started, 1.0)
        self.assertEqual((self.api.calls(), events[0]['score']), (3, 'Safe'))

    def test_garbage_and_oversized_bodies_are_bad_responses(self):
        huge = b'{"pad": "' + b'x' * (3 * 1024 * 1024) + b'"}'
        for answer in ({'raw': b'<html>captive portal</html>'}, {'raw': huge},
                       {'raw': huge, 'headers': {'Content-Length': str(len(huge))}}):
            with self.subTest(size=len(answer['raw'])):
                self.tearDown()
                self.setUp()
                event = self.assertErrorEvent([answer], 'bad_response')
                self.assertLess(len(json.dumps(event)), 2000)

    def test_a_hanging_api_never_holds_integratord_past_the_deadline(self):
        self.home.options.update(deadline=3, timeout=30)
        self.api.answer(TOR_IP, {'delay': 20, 'body': clean_report(TOR_IP)})
        code, output, seconds = self.home.run(alert_for())
        self.assertEqual(code, 0, output)
        self.assertLess(seconds, 6)
        self.assertEqual(self.home.events()[0]['error'], 'unavailable')

    def test_a_dripping_answer_is_cut_at_the_deadline(self):
        self.home.options.update(deadline=3, timeout=2)
        big = json.dumps(clean_report(TOR_IP)).encode() * 10
        self.api.answer(TOR_IP, {'raw': big, 'drip': 0.8})
        code, output, seconds = self.home.run(alert_for())
        self.assertEqual(code, 0, output)
        self.assertLess(seconds, 6)
        self.assertEqual(self.home.events()[0]['error'], 'unavailable')

    def test_connection_refused_is_unavailable(self):
        port = self.api.server.server_port
        self.api.close()
        self.home.options['api_url'] = f'http://127.0.0.1:{port}'
        self.home.retries = '1'
        self.api = FakeCriminalIP()
        event = self.run_ok()[0]
        self.assertEqual(event['error'], 'unavailable')


class Transport(IntegrationTestCase):
    def test_tls_certificates_are_verified_and_ca_file_adds_a_trusted_authority(self):
        tls_api = FakeCriminalIP(tls=True)
        self.addCleanup(tls_api.close)
        self.home.options['api_url'] = tls_api.url
        self.home.retries = '0'
        event = self.run_ok()[0]
        self.assertEqual(event['error'], 'unavailable')
        self.assertIn('CERTIFICATE_VERIFY_FAILED', event['error_message'])
        self.assertIn('set ca_file', event['error_message'])
        self.assertEqual(tls_api.calls(), 0, 'no request crossed an unverified connection')
        self.home.options['ca_file'] = TLS_CERT
        self.assertEqual(self.run_ok(alert_for('45.9.148.40'))[0]['score'], 'Safe')
        self.assertEqual(tls_api.requests[0]['key'], KEY)

    def test_an_unreadable_ca_file_is_refused_with_exit_4(self):
        self.home.options['ca_file'] = os.path.join(self.home.path, 'missing.pem')
        code, output, _ = self.home.run(alert_for())
        self.assertEqual(code, 4)
        self.assertIn('is not a readable file', output)

    def test_an_explicit_proxy_carries_the_request(self):
        self.home.options.update(api_url='http://127.0.0.1:9', proxy=self.api.url)
        self.assertEqual(self.run_ok()[0]['score'], 'Safe')
        self.assertEqual(self.api.requests[0]['target'], f'http://127.0.0.1:9/v1/asset/ip/report?ip={TOR_IP}')

    def test_proxy_variables_in_the_environment_are_ignored(self):
        dead = 'http://127.0.0.1:9'
        env = {'http_proxy': dead, 'https_proxy': dead, 'HTTP_PROXY': dead, 'HTTPS_PROXY': dead,
               'no_proxy': '', 'NO_PROXY': ''}
        self.assertEqual(self.run_ok(env=env)[0]['score'], 'Safe')
        self.assertEqual(self.api.calls(), 1)


class EventsOnTheQueue(IntegrationTestCase):
    def test_manager_alerts_use_the_plain_header(self):
        self.run_ok()
        self.assertTrue(self.home.received[0].startswith('1:criminalip:{"integration":"criminalip"'))

    def test_agent_alerts_carry_an_escaped_location(self):
        agent = {'id': '017', 'name': 'web|01:dmz', 'ip': '10.0.0.5'}
        self.run_ok(alert_for(agent=agent))
        self.assertTrue(self.home.received[0].startswith(
            '1:[017] (web||01|:dmz) 10.0.0.5->criminalip:{"integration":"criminalip"'),
            self.home.received[0][:80])
        self.run_ok(alert_for('45.9.148.9', agent={'id': '018', 'name': 'db'}))
        self.assertTrue(self.home.received[1].startswith('1:[018] (db) any->criminalip:'))

    def test_integration_key_comes_first_and_only_inbound_ips_fill_srcip(self):
        self.run_ok()
        self.run_ok(alert_for('45.9.148.9', field='dstip'))
        inbound, outbound = [json.loads(m.partition('criminalip:')[2]) for m in self.home.received]
        self.assertEqual(list(inbound), ['integration', 'srcip', 'criminalip'])
        self.assertEqual(inbound['srcip'], TOR_IP, 'firewall-drop blocks the static srcip field')
        self.assertEqual(list(outbound), ['integration', 'criminalip'])

    def test_events_stay_small_even_for_huge_answers(self):
        report = risky_report(TOR_IP, is_tor=True)
        report['whois']['data'][0]['as_name'] = 'A' * 100000
        report['ids']['data'][0]['message'] = 'M' * 100000
        report['ip_category']['data'] = [{'type': f'category-{n}'} for n in range(5000)]
        self.api.answer(TOR_IP, {'body': report})
        self.run_ok(alert_for(rule={'id': '5710', 'description': 'D' * 100000}))
        self.assertLess(len(self.home.received[0].encode()), 4096)

    def test_the_run_is_logged_in_one_line_without_the_key(self):
        self.run_ok()
        lines = [line for line in self.home.log().splitlines() if 'INFO' in line]
        self.assertEqual(len(lines), 1)
        self.assertRegex(lines[0], rf'custom-criminalip\[\d+\] INFO: alert 1733306400.12345 rule 5710: '
                                   rf'{TOR_IP} api; 1 event\(s\) in \d+ ms')
        self.assertNotIn(KEY, self.home.log())

    def test_the_key_is_redacted_even_from_debug_output_and_errors(self):
        self.api.answer(TOR_IP, {'body': {'status': 401, 'message': f'invalid api key {KEY}'}})
        events = self.run_ok(debug=True)
        self.assertNotIn(KEY, self.home.log() + json.dumps(events))
        self.assertIn('***', events[0]['error_message'])


class QueueSocketProblems(IntegrationTestCase):
    def test_missing_socket_exits_5_and_keeps_the_event_for_the_next_run(self):
        self.home.close_queue()
        code, output, _ = self.home.run(alert_for())
        self.assertEqual(code, 5)
        self.assertIn('is wazuh-analysisd running', output)
        self.home.open_queue()
        self.run_ok(alert_for('45.9.148.9'))
        self.assertEqual([e['ip'] for e in self.home.events()], [TOR_IP, '45.9.148.9'])
        self.assertLogged('delivered 1 event(s) kept from earlier runs')

    def test_many_processes_against_a_dead_socket_lose_nothing(self):
        self.home.close_queue()
        ips = [f'45.9.149.{n}' for n in range(1, 21)]
        processes = [self.home.start(alert_for(ip)) for ip in ips]
        self.assertEqual([p.wait(timeout=120) for p in processes], [5] * 20)
        for process in processes:
            process.stdout.close()
        self.home.open_queue()
        self.run_ok(alert_for(TOR_IP))
        self.assertEqual(sorted(e['ip'] for e in self.home.events()), sorted(ips + [TOR_IP]))
        self.assertLogged('delivered 20 event(s) kept from earlier runs')

    def test_refusing_socket_exits_5(self):
        self.home.close_queue()
        dead = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        dead.bind(self.home.socket_path)
        dead.close()                                  # the file stays, nobody listens
        code, output, _ = self.home.run(alert_for())
        self.assertEqual(code, 5)
        self.assertIn('wazuh-analysisd is not running', output)



# ==============================================================================================
# Issue 3: never waste a credit - the cache, cooldowns and the lookup budget
# ==============================================================================================

class CacheSavesCredits(IntegrationTestCase):
    def setUp(self):
        super().setUp()
        self.home.clock = NOON

    def entries(self) -> list:
        found = []
        for folder, _, files in os.walk(os.path.join(self.home.cache_dir, 'entries')):
            found += [os.path.join(folder, name) for name in files if name.endswith('.json')]
        return found

    def test_repeated_alerts_for_one_ip_cost_one_credit_per_ttl(self):
        first = self.run_ok()
        repeats = [self.run_ok()[0] for _ in range(4)]
        self.assertEqual(self.api.calls(), 1)
        self.assertIs(first[0]['cached'], False)
        self.assertTrue(all(e['cached'] is True and e['stale'] is False for e in repeats))
        self.assertEqual({k: v for k, v in repeats[0].items() if k not in ('cached', 'source')},
                         {k: v for k, v in first[0].items() if k not in ('cached', 'source')})
        self.home.clock = NOON + DAY - 1
        self.run_ok()
        self.assertEqual(self.api.calls(), 1, 'still inside the default one-day TTL')
        self.home.clock = NOON + DAY + 1
        self.assertIs(self.run_ok()[0]['cached'], False)
        self.assertEqual(self.api.calls(), 2)

    def test_failures_are_remembered_briefly_and_send_no_repeat_events(self):
        self.home.options['deadline'] = 2
        self.api.answer(TOR_IP, {'status': 500, 'raw': b'oops'})
        self.assertEqual(self.run_ok()[0]['error'], 'unavailable')
        calls = self.api.calls()
        self.home.clock = NOON + 299
        self.assertEqual(self.run_ok(), [], 'the first failure already reported it')
        self.assertEqual(self.api.calls(), calls)
        self.api.answer(TOR_IP, {'body': clean_report(TOR_IP)})
        self.home.clock = NOON + 301
        self.assertEqual(self.run_ok()[0]['score'], 'Safe')

    def test_fifty_simultaneous_processes_on_five_new_ips_make_five_calls(self):
        ips = [f'45.9.148.{n}' for n in range(10, 15)]
        for ip in ips:
            self.api.answer(ip, {'delay': 0.2, 'body': clean_report(ip)})
        processes = [self.home.start(alert_for(ips[n % 5])) for n in range(50)]
        codes = [process.wait(timeout=120) for process in processes]
        for process in processes:
            process.stdout.close()
        self.home.settle()
        self.assertEqual(codes, [0] * 50, self.home.log())
        self.assertEqual(sorted(r['ip'] for r in self.api.requests), ips)
        self.assertEqual(len(self.home.events()), 50)
        self.assertEqual(sum(1 for e in self.home.events() if not e['cached']), 5)

    def test_limit_exceeded_stops_all_calls_until_the_next_utc_day(self):
        self.run_ok(alert_for(CLEAN_IP))
        self.api.answer(TOR_IP, {'body': {'status': 403, 'message': 'limit exceeded'}})
        self.assertEqual(self.run_ok()[0]['error'], 'quota')
        self.assertEqual([self.run_ok(alert_for(f'45.9.148.{n}')) for n in range(3)], [[], [], []],
                         'one error event when the cooldown starts, then silence')
        self.assertEqual(self.run_ok(alert_for(CLEAN_IP))[0]['cached'], True, 'cache still served')
        self.assertEqual(self.api.calls(), 2)
        self.home.clock = NOON + 3601
        self.assertEqual(self.run_ok(alert_for('45.9.148.9'))[0]['error'], 'quota', 'hourly reminder')
        self.assertEqual(self.run_ok(alert_for('45.9.148.10')), [])
        self.assertEqual(self.api.calls(), 2)
        self.home.clock = NOON + DAY // 2 + 1                    # just after UTC midnight
        self.api.answer(TOR_IP, {'body': clean_report(TOR_IP)})
        self.assertEqual(self.run_ok()[0]['score'], 'Safe')
        self.assertEqual(self.api.calls(), 3)

    def test_quota_cooldown_option_shortens_the_pause(self):
        self.home.options['quota_cooldown'] = 600
        self.api.answer(TOR_IP, {'body': {'status': 403, 'message': 'limit exceeded'}},
                        {'body': clean_report(TOR_IP)})
        self.run_ok()
        self.home.clock = NOON + 599
        self.assertEqual(self.run_ok(), [])
        self.home.clock = NOON + 601
        self.assertEqual(self.run_ok()[0]['score'], 'Safe')

    def test_invalid_key_stops_calls_until_the_key_changes(self):
        self.api.answer(TOR_IP, {'body': {'status': 401, 'message': 'invalid api key'}},
                        {'body': clean_report(TOR_IP)})
        self.assertEqual(self.run_ok()[0]['error'], 'auth')
        self.home.clock = NOON + 1800
        self.assertEqual(self.run_ok(alert_for('45.9.148.20')), [])
        self.assertEqual(self.api.calls(), 1)
        self.assertEqual(self.run_ok(key='a-new-key-123456')[0]['score'], 'Safe')
        self.assertEqual(self.api.calls(), 2)
        with open(os.path.join(self.home.cache_dir, 'state.json'), encoding='utf-8') as handle:
            self.assertNotIn(KEY, handle.read(), 'only a fingerprint of the key is stored')

    def test_rate_limit_beyond_the_deadline_becomes_a_cooldown(self):
        self.api.answer(TOR_IP, {'status': 429, 'headers': {'Retry-After': '120'}, 'body': {}},
                        {'body': clean_report(TOR_IP)})
        self.assertEqual(self.run_ok()[0]['error'], 'rate_limited')
        self.home.clock = NOON + 119
        self.assertEqual(self.run_ok(), [])
        self.home.clock = NOON + 121
        self.assertEqual(self.run_ok()[0]['score'], 'Safe')
        self.assertEqual(self.api.calls(), 2)

    def test_expired_entries_are_served_stale_during_a_cooldown(self):
        self.api.answer(TOR_IP, {'body': risky_report(TOR_IP, is_tor=True)})
        self.api.answer('45.9.148.30', {'body': {'status': 403, 'message': 'limit exceeded'}})
        self.run_ok()
        self.home.clock = NOON + 2 * DAY
        self.assertEqual(self.run_ok(alert_for('45.9.148.30'))[0]['error'], 'quota')
        stale = self.run_ok()[0]
        self.assertEqual((stale['is_tor'], stale['cached'], stale['stale']), (True, True, True))
        self.assertEqual(self.api.calls(), 2)

    def test_daily_lookup_budget_behaves_like_a_quota_with_its_own_code(self):
        self.home.options['max_lookups_per_day'] = 2
        self.run_ok(alert_for('45.9.148.1'))
        self.run_ok(alert_for('45.9.148.2'))
        self.assertEqual(self.run_ok(alert_for('45.9.148.3'))[0]['error'], 'budget')
        self.assertEqual(self.run_ok(alert_for('45.9.148.4')), [])
        self.assertEqual(self.run_ok(alert_for('45.9.148.1'))[0]['cached'], True)
        self.assertEqual(self.api.calls(), 2)
        self.home.clock = NOON + DAY
        self.assertIs(self.run_ok(alert_for('45.9.148.3'))[0]['cached'], False)

    def test_corrupt_truncated_and_foreign_entries_are_misses_that_get_replaced(self):
        self.run_ok()
        [path] = self.entries()
        with open(path, encoding='utf-8') as handle:
            good = handle.read()
        for bad in ('', good[:len(good) // 2], '\x00\xff\xfe', '[1, 2]', '[' * 100000,
                    good.replace(TOR_IP, '1.2.3.4'),
                    '{"ip": "%s", "stored": "yesterday", "report": 1}' % TOR_IP,
                    '{"ip": "%s", "stored": %d, "report": {"score": "Safe"}}' % (TOR_IP, NOON)):
            with self.subTest(bad=bad[:30]):
                with open(path, 'w', encoding='utf-8', errors='surrogateescape') as handle:
                    handle.write(bad)
                calls = self.api.calls()
                self.assertIs(self.run_ok()[0]['cached'], False)
                self.assertEqual(self.api.calls(), calls + 1)
                self.assertIs(self.run_ok()[0]['cached'], True, 'replaced by a good entry')
        self.assertLogged('treated as a miss')

    def test_corrupt_state_file_is_survived(self):
        os.makedirs(self.home.cache_dir)
        for bad in ('{"cooldowns": ', '[]', '{"cooldowns": {"quota": "soon"}, "calls": "many"}'):
            with self.subTest(bad=bad):
                with open(os.path.join(self.home.cache_dir, 'state.json'), 'w') as handle:
                    handle.write(bad)
                self.assertEqual(len(self.run_ok(alert_for(f'45.9.148.{len(bad)}'))), 1)

    def test_unwritable_cache_degrades_to_no_cache_and_still_enriches(self):
        blocker = self.home.write('var/not-a-folder', 'x')
        self.home.options['cache_dir'] = os.path.join(blocker, 'criminalip')
        for _ in range(2):
            self.assertEqual(self.run_ok()[0]['score'], 'Safe')
        self.assertLogged('cache disabled for this run')
        self.assertEqual(self.api.calls(), 2)

    def test_cache_stays_bounded(self):
        self.home.options['cache_max_entries'] = 50
        options = self.home.write('etc/custom-criminalip.json', self.home.options)
        ips = [f'45.{n // 250}.{n % 250}.1' for n in range(200)]
        for batch in range(0, 200, 50):                 # 4 operators, 50 distinct IPs each
            code, output, error = self.home.command('--lookup', *ips[batch:batch + 50], '--options',
                                                    options, env={'CRIMINALIP_API_KEY': KEY})
            self.assertEqual(code, 0, error)
        self.assertEqual(self.api.calls(), 200)
        self.assertLessEqual(len(self.entries()), 60)
        self.assertGreaterEqual(len(self.entries()), 40)

    def test_old_counter_files_are_pruned_with_the_cache(self):
        self.home.options['cache_max_entries'] = 1
        self.run_ok()
        stats = os.path.join(self.home.cache_dir, 'stats')
        for day in ('2020-01-01', '2020-01-02'):
            self.home.write(os.path.join(stats, day), 'hit\n')
        self.run_ok(alert_for('45.9.148.77'))
        self.assertEqual(len(os.listdir(stats)), 1, os.listdir(stats))

    def test_a_cache_hit_loads_no_http_or_tls_code(self):
        self.run_ok()
        alert_file = self.home.write('hit.alert', alert_for())
        options = self.home.write('hit.options', self.home.options)
        probe = ('import runpy, sys\n'
                 f'sys.argv = {[self.home.script, alert_file, KEY, "", "", options, "10", "3"]!r}\n'
                 'try:\n    runpy.run_path(sys.argv[0], run_name="__main__")\n'
                 'except SystemExit as done:\n    assert done.code == 0, done.code\n'
                 'print(sorted(m for m in ("urllib.request", "http.client", "ssl") '
                 'if m in sys.modules))\n')
        done = subprocess.run([sys.executable, '-c', probe], capture_output=True, text=True,
                              env=dict(os.environ, CRIMINALIP_TEST_NOW=str(NOON)))
        self.assertEqual(done.stdout.strip(), '[]', done.stderr)
        self.home.settle()
        self.assertIs(self.home.events()[-1]['cached'], True)

    @unittest.skipUnless(os.geteuid() == 0, 'needs root to create files for another user')
    def test_files_made_by_root_go_to_wazuh_or_the_folder_owner(self):
        os.chown(os.path.dirname(self.home.cache_dir), 65534, 65534)   # var/, as wazuh would own it
        try:
            wazuh = pwd.getpwnam('wazuh')
            expected = (wazuh.pw_uid, wazuh.pw_gid)
        except KeyError:
            expected = (65534, 65534)
        code, output, _ = self.home.command('--lookup', TOR_IP, '--options', self.home.write(
            'lookup.options', self.home.options), env={'CRIMINALIP_API_KEY': KEY})
        self.assertEqual(code, 0, output)
        owner = os.stat(self.home.cache_dir)
        self.assertEqual((owner.st_uid, owner.st_gid), expected, 'the cache folder itself too')
        for folder, dirs, files in os.walk(self.home.cache_dir):
            for name in dirs + files:
                owner = os.stat(os.path.join(folder, name))
                self.assertEqual((owner.st_uid, owner.st_gid), expected, name)


class OperatorCommands(IntegrationTestCase):
    def setUp(self):
        super().setUp()
        self.options = self.home.write('etc/custom-criminalip.json', self.home.options)

    def test_lookup_prints_the_event_and_fills_the_cache(self):
        self.api.answer(TOR_IP, {'body': risky_report(TOR_IP, is_tor=True)})
        code, output, error = self.home.command('--lookup', TOR_IP, env={'CRIMINALIP_API_KEY': KEY})
        self.assertEqual(code, 0, error)
        self.assertTrue(json.loads(output)['criminalip']['is_tor'])
        self.assertIs(self.run_ok()[0]['cached'], True)
        self.assertEqual(self.api.calls(), 1)

    def test_lookup_reads_a_key_file_and_never_needs_the_key_in_argv(self):
        key_file = self.home.write('etc/key', KEY)
        code, output, error = self.home.command('--lookup', CLEAN_IP, '--api-key-file', key_file,
                                                env={'CRIMINALIP_API_KEY': ''})
        self.assertEqual(code, 0, error)
        self.assertEqual(self.api.requests[0]['key'], KEY)

    def test_lookup_refuses_private_addresses_and_missing_keys(self):
        self.assertEqual(self.home.command('--lookup', '192.168.1.1', env={'CRIMINALIP_API_KEY': KEY})[0], 2)
        code, _, error = self.home.command('--lookup', TOR_IP, env={'CRIMINALIP_API_KEY': ''})
        self.assertEqual(code, 3)
        self.assertIn('no API key', error)

    def test_stats_counts_today_and_shows_cooldowns(self):
        self.home.clock = NOON
        self.run_ok()
        self.run_ok()
        self.api.answer('45.9.148.5', {'body': {'status': 403, 'message': 'limit exceeded'}})
        self.run_ok(alert_for('45.9.148.5'))
        code, output, _ = self.home.command('--stats')
        stats = json.loads(output)
        self.assertEqual(code, 0)
        self.assertEqual((stats['entries'], stats['today']['hits'], stats['today']['misses'],
                          stats['today']['api_calls'], stats['today']['errors']),
                         (1, 1, 2, 2, {'quota': 1}))
        self.assertIn('quota', stats['cooldowns'])

    def test_purge_empties_the_cache(self):
        self.run_ok()
        code, output, _ = self.home.command('--purge')
        self.assertEqual(code, 0)
        self.assertIn('removed 1 cache entries', output)
        self.assertIs(self.run_ok()[0]['cached'], False)

    def test_help_and_version(self):
        code, output, _ = self.home.command('--version')
        self.assertEqual((code, output.split()[0]), (0, 'custom-criminalip'))
        code, output, _ = self.home.command('--help')
        self.assertEqual(code, 0)
        for word in ('--selftest', '--lookup', '--stats', '--purge', 'Exit codes'):
            self.assertIn(word, output)


# ==============================================================================================
# A model of wazuh-analysisd's rule matching, to replay tests/criminal_ip.ini without a manager
# ==============================================================================================
# A small model of wazuh-analysisd's rule matching, for the features criminal_ip_ruleset.xml uses.
#
# Modelled on src/analysisd/rules.c as summarised in shared/reference/wazuh-integratord.md:
# - the stock `json` decoder (prematch `^{\s*"`) flattens objects to dotted names and turns values
#   into strings: true/false, integers as %i, floats as %f, null as "null", arrays as JSON text;
# - `<field>` is osregex by default (case-insensitive, unanchored unless ^/$, `|` separates
#   alternatives) or pcre2 with type="pcre2" (case-sensitive); a missing field never matches;
# - of the children of a matching rule that match, a level-0 child wins, else the highest level,
#   ties going to the one loaded first; evaluation then continues below the winner.
# Anything else in a rule (a tag, an osregex metacharacter) is refused, so the model cannot silently
# pass a rule that a real manager would read differently.


STATIC_FIELDS = {'srcip', 'dstip', 'srcport', 'dstport', 'protocol', 'action', 'user', 'srcuser',
                 'dstuser', 'id', 'status', 'url', 'data', 'extra_data', 'system_name', 'location',
                 'full_log', 'program_name', 'hostname'}
RULE_OPTIONS = {'alert_by_email', 'no_email_alert', 'no_log', 'no_full_log', 'no_counter'}
SUPPORTED_TAGS = {'decoded_as', 'field', 'if_sid', 'description', 'options', 'group', 'mitre'}
OSREGEX_SPECIAL = set('\\.*+()[]{}?')


class RuleError(ValueError):
    """The ruleset uses something this model (or Wazuh) would not accept."""


def load_rules(path: str) -> list:
    """Rules in load order, each a dict; raises RuleError on anything outside the model."""
    with open(path, encoding='utf-8') as handle:
        root = ElementTree.fromstring(f'<root>{handle.read()}</root>')
    rules = []
    for group in root:
        if group.tag != 'group':
            raise RuleError(f'top-level <{group.tag}> where only <group> is allowed')
        for element in group:
            if element.tag != 'rule':
                raise RuleError(f'<{element.tag}> inside <group>')
            rules.append(parse_rule(element, group.get('name', '')))
    return rules


def parse_rule(element, group_name: str) -> dict:
    rule = {'id': element.get('id'), 'level': int(element.get('level')), 'if_sid': [],
            'decoded_as': None, 'fields': [], 'groups': [group_name], 'options': [],
            'description': '', 'mitre': []}
    for child in element:
        if child.tag not in SUPPORTED_TAGS:
            raise RuleError(f'rule {rule["id"]}: <{child.tag}> is not modelled')
        text = (child.text or '').strip()
        if child.tag == 'if_sid':
            rule['if_sid'] += [part.strip() for part in text.replace(',', ' ').split()]
        elif child.tag == 'decoded_as':
            rule['decoded_as'] = text
        elif child.tag == 'field':
            rule['fields'].append({'name': child.get('name'), 'pattern': child.text or '',
                                   'type': child.get('type', 'osregex'),
                                   'negate': child.get('negate', 'no') == 'yes'})
        elif child.tag == 'group':
            rule['groups'].append(child.text or '')
        elif child.tag == 'options':
            rule['options'].append(text)
        elif child.tag == 'description':
            rule['description'] = text
        else:
            rule['mitre'] += [(item.text or '').strip() for item in child.iter('id')]
    return rule


def group_names(rules: list) -> set:
    names = set()
    for rule in rules:
        for text in rule['groups']:
            names.update(part for part in text.split(',') if part)
    return names


def flatten(value, prefix: str = '') -> dict:
    """The fields the json decoder makes from an event, as the strings rules see."""
    if isinstance(value, dict):
        fields = {}
        for key, item in value.items():
            fields.update(flatten(item, f'{prefix}.{key}' if prefix else key))
        return fields
    if isinstance(value, bool):
        text = 'true' if value else 'false'
    elif value is None:
        text = 'null'
    elif isinstance(value, int):
        text = '%i' % value
    elif isinstance(value, float):
        text = '%f' % value
    elif isinstance(value, list):
        text = json.dumps(value, separators=(',', ':'))
    else:
        text = str(value)
    return {prefix: text}


def osregex_matches(pattern: str, text: str) -> bool:
    for alternative in pattern.split('|'):
        core = alternative[1:] if alternative.startswith('^') else alternative
        core = core[:-1] if core.endswith('$') else core
        if OSREGEX_SPECIAL & set(core) or '^' in core or '$' in core:
            raise RuleError(f'osregex "{pattern}" uses syntax this model does not cover')
        regex = ('^' if alternative.startswith('^') else '') + re.escape(core) + \
                ('$' if alternative.endswith('$') else '')
        if re.search(regex, text, re.IGNORECASE):
            return True
    return False


def field_matches(condition: dict, fields: dict) -> bool:
    if condition['name'] not in fields:
        return False
    text = fields[condition['name']]
    if condition['type'] == 'pcre2':
        found = re.search(condition['pattern'], text) is not None
    elif condition['type'] == 'osregex':
        found = osregex_matches(condition['pattern'], text)
    else:
        raise RuleError(f'field type {condition["type"]} is not modelled')
    return found != condition['negate']


def rule_matches(rule: dict, fields: dict) -> bool:
    if rule['decoded_as'] not in (None, 'json') or fields is None:
        return False
    return all(field_matches(condition, fields) for condition in rule['fields'])


def evaluate(rules: list, log: str):
    """The rule that fires for one log line (a dict), or None."""
    try:
        fields = flatten(json.loads(log)) if re.match(r'^{\s*"', log) else None
    except ValueError:
        fields = None
    children = {}
    for rule in rules:
        for parent in rule['if_sid']:
            children.setdefault(parent, []).append(rule)
    candidates = [rule for rule in rules if not rule['if_sid']]
    fired = None
    while True:
        matching = [rule for rule in candidates if rule_matches(rule, fields)]
        if not matching:
            return fired
        zero = [rule for rule in matching if rule['level'] == 0]
        fired = zero[0] if zero else max(matching, key=lambda rule: rule['level'])
        candidates = children.get(fired['id'], [])


# ==============================================================================================
# Issue 4: the ruleset and the ossec.conf snippet - one right alert per lookup
# ==============================================================================================

RULESET = os.path.join(REPO, 'criminal_ip_ruleset.xml')
SNIPPET = os.path.join(REPO, 'ossec.conf.snippet')
INI = os.path.join(REPO, 'tests', 'criminal_ip.ini')
LADDER = {'100623': 0, '100628': 12, '100648': 12, '100629': 10, '100649': 10, '100625': 10,
          '100627': 10, '100638': 8, '100636': 7, '100643': 7, '100624': 6, '100630': 6,
          '100626': 5, '100633': 4, '100634': 4, '100631': 3, '100637': 2, '100640': 7,
          '100641': 7, '100644': 7, '100642': 3}
BLOG_MEANING = {'100624': ('criminalip.is_vpn', '^true$'), '100625': ('criminalip.is_tor', '^true$'),
                '100626': ('criminalip.is_proxy', '^true$'), '100627': ('criminalip.is_darkweb', '^true$'),
                '100628': ('criminalip.score', '^Critical$'), '100629': ('criminalip.score', '^Dangerous$'),
                '100630': ('criminalip.score', '^Moderate$'), '100631': ('criminalip.score', '^Low$'),
                '100633': ('criminalip.is_hosting', '^true$'), '100634': ('criminalip.is_cloud', '^true$'),
                '100636': ('criminalip.is_scanner', '^true$'), '100637': ('criminalip.is_mobile', '^true$'),
                '100638': ('criminalip.is_anonymous_vpn', '^true$'),
                '100640': ('criminalip.error', '^auth$'), '100641': ('criminalip.error', '^quota$')}


def ini_cases():
    """(section, rule, level, [(name, log, should_fire)]) from tests/criminal_ip.ini."""
    parser = configparser.RawConfigParser()
    parser.read(INI, encoding='utf-8')
    for section in parser.sections():
        logs = [(name, value, name.endswith('pass')) for name, value in parser.items(section)
                if name.startswith('log ')]
        yield section, parser.get(section, 'rule'), int(parser.get(section, 'alert')), logs


def snippet_document():
    with open(SNIPPET, encoding='utf-8') as handle:
        return ElementTree.fromstring(f'<root>{handle.read()}</root>')


class RulesetAndSnippet(IntegrationTestCase):
    rules = load_rules(RULESET)
    by_id = {rule['id']: rule for rule in rules}

    def emitted_fields(self) -> set:
        """Every field name the integration really sends: a risky inbound, an outbound, an error."""
        self.api.answer(TOR_IP, {'body': risky_report(TOR_IP, is_tor=True)})
        self.api.answer('45.9.148.5', {'body': {'status': 403, 'message': 'limit exceeded'}})
        self.run_ok(alert_for(TOR_IP))
        self.run_ok(alert_for('45.9.148.4', field='dstip'))
        self.run_ok(alert_for('45.9.148.5'))
        fields = set()
        for message in self.home.received:
            fields |= set(flatten(json.loads(message.partition('criminalip:')[2])))
        return fields

    def test_ids_are_unique_in_our_range_and_keep_the_blog_ladder(self):
        ids = [rule['id'] for rule in self.rules]
        self.assertEqual(len(ids), len(set(ids)), 'duplicate rule ids')
        self.assertTrue(all(100600 <= int(i) <= 100699 for i in ids), ids)
        self.assertEqual({rule['id']: rule['level'] for rule in self.rules}, LADDER)

    def test_blog_rule_ids_keep_their_meaning(self):
        for rule_id, (field, pattern) in BLOG_MEANING.items():
            conditions = [(f['name'], f['pattern']) for f in self.by_id[rule_id]['fields']]
            self.assertIn((field, pattern), conditions, rule_id)
        self.assertIn('^unavailable$', self.by_id['100642']['fields'][0]['pattern'])

    def test_parent_is_an_anchored_level_0_json_rule_like_virustotal(self):
        parent = self.by_id['100623']
        self.assertEqual((parent['level'], parent['decoded_as'], parent['if_sid']), (0, 'json', []))
        self.assertEqual([(f['name'], f['pattern']) for f in parent['fields']],
                         [('integration', '^criminalip$')])
        self.assertEqual(parent['options'], ['no_full_log'])

    def test_every_child_hangs_off_a_rule_defined_earlier_in_this_file(self):
        seen = set()
        for rule in self.rules:
            for parent in rule['if_sid']:
                self.assertIn(parent, seen, f'{rule["id"]} needs {parent} loaded first')
            seen.add(rule['id'])
        self.assertEqual([r['id'] for r in self.rules if not r['if_sid']], ['100623'])

    def test_fields_are_ones_the_integration_emits_never_static_and_always_anchored(self):
        emitted = self.emitted_fields()
        for rule in self.rules:
            for condition in rule['fields']:
                self.assertIn(condition['name'], emitted, rule['id'])
                self.assertNotIn(condition['name'].split('.')[0], STATIC_FIELDS)
                self.assertFalse(condition['name'].startswith(('data.', 'full_log')))
                for alternative in condition['pattern'].split('|'):
                    self.assertRegex(alternative, r'^\^.*\$$', f'{rule["id"]}: anchor every regex')

    def test_groups_end_with_a_comma_and_options_levels_and_mitre_are_valid(self):
        for rule in self.rules:
            for text in rule['groups']:
                self.assertTrue(text.endswith(','), f'{rule["id"]}: group "{text}" needs a comma')
            self.assertTrue(set(rule['options']) <= RULE_OPTIONS, rule['options'])
            self.assertTrue(0 <= rule['level'] <= 16)
            for technique in rule['mitre']:
                self.assertRegex(technique, r'^T\d{4}(\.\d{3})?$')
            self.assertTrue(rule['description'])
        mitre = {rule['id']: rule['mitre'] for rule in self.rules}
        self.assertEqual((mitre['100625'], mitre['100636'], mitre['100648']),
                         (['T1090.003'], ['T1595'], ['T1071']))

    def test_every_ini_case_resolves_to_its_expected_rule(self):
        covered = set()
        for section, rule_id, level, logs in ini_cases():
            self.assertTrue(any(passes for _, _, passes in logs), f'{section}: no pass line')
            for name, log, should_fire in logs:
                fired = evaluate(self.rules, log)
                hit = fired is not None and (fired['id'], fired['level']) == (rule_id, level)
                with self.subTest(section=section, line=name):
                    self.assertEqual(hit, should_fire, f'fired {fired and fired["id"]}')
            covered.add(rule_id)
        self.assertEqual(covered, set(LADDER) - {'100623'}, 'every alerting rule has a case')

    def test_ini_events_have_the_shape_the_integration_sends(self):
        emitted = self.emitted_fields()
        for section, _, _, logs in ini_cases():
            for _, log, _ in logs:
                fields = set(flatten(json.loads(log)))
                self.assertTrue(fields <= emitted, f'{section}: {sorted(fields - emitted)}')

    def test_a_clean_ip_raises_no_alert(self):
        self.run_ok(alert_for(CLEAN_IP))
        fired = evaluate(self.rules, self.home.received[0].partition('criminalip:')[2])
        self.assertEqual((fired['id'], fired['level']), ('100623', 0))

    def test_real_events_fire_the_most_severe_rule_and_tell_the_whole_story(self):
        self.api.answer(TOR_IP, {'body': risky_report(TOR_IP, 'Critical', 'Safe', is_tor=True,
                                                      is_anonymous_vpn=False)})
        self.api.answer('45.9.148.6', {'body': risky_report('45.9.148.6', 'Safe', 'Dangerous')})
        self.run_ok(alert_for(TOR_IP))
        self.run_ok(alert_for('45.9.148.6', field='dstip'))
        outcomes = []
        for message in self.home.received:
            event = json.loads(message.partition('criminalip:')[2])
            fired = evaluate(self.rules, json.dumps(event))
            outcomes.append((fired['id'], fired['level']))
            if fired['id'] == '100628':
                self.assertIn('tor', event['criminalip']['summary'])
                self.assertIn('$(criminalip.summary)', fired['description'])
        self.assertEqual(outcomes, [('100628', 12), ('100649', 10)])

    def test_snippet_selects_auth_failures_and_can_never_match_our_own_alerts(self):
        [integration] = list(snippet_document().iter('integration'))
        text = {child.tag: (child.text or '') for child in integration}
        self.assertEqual(text['name'], 'custom-criminalip')
        self.assertEqual(text['alert_format'], 'json')
        self.assertNotIn(' ', text['group'])
        groups = set(text['group'].split(','))
        self.assertTrue({'sshd', 'invalid_login', 'authentication_failed'} <= groups)
        self.assertEqual(groups & group_names(self.rules), set())

    def test_snippet_uses_only_tags_every_4x_manager_accepts(self):
        [integration] = list(snippet_document().iter('integration'))
        wazuh_4_3_tags = {'name', 'api_key', 'hook_url', 'level', 'rule_id', 'group',
                          'event_location', 'max_log', 'alert_format'}   # 4.3 refuses any other
        self.assertTrue({child.tag for child in integration} <= wazuh_4_3_tags)
        self.assertTrue(all((child.text or '').strip() for child in integration),
                        'an empty tag stops the manager')

    def test_the_options_example_in_the_snippet_is_understood_by_the_script(self):
        with open(SNIPPET, encoding='utf-8') as handle:
            example = json.loads(next(line for line in handle if '"api_key_file"' in line))
        self.home.write('etc/criminalip.key', KEY)
        example['api_key_file'] = os.path.join(self.home.path, 'etc', 'criminalip.key')
        self.home.write('etc/custom-criminalip.json', dict(example, api_url=self.api.url))
        alert_file = self.home.write('a.alert', alert_for())
        done = subprocess.run([sys.executable, self.home.script, alert_file, '', '', ''],
                              capture_output=True, text=True)
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertEqual(self.api.requests[0]['key'], KEY)
        self.assertNotIn('WARNING', self.home.log())

    def test_snippet_offers_a_commented_firewall_drop_for_tor_and_critical_sources(self):
        with open(SNIPPET, encoding='utf-8') as handle:
            text = handle.read()
        self.assertEqual(list(snippet_document().iter('active-response')), [], 'must stay commented')
        example = ElementTree.fromstring(text[text.index('<active-response>'):
                                              text.index('</active-response>') + 18])
        self.assertEqual(example.findtext('command'), 'firewall-drop')
        self.assertEqual(example.findtext('rules_id'), '100625,100628')
        self.assertTrue(example.findtext('timeout').isdigit())


# ==============================================================================================
# Issue 5: install by hand or with make install, and prove it works with --selftest
# ==============================================================================================

OSSEC_CONF = """<!--
  Wazuh - Manager - Default configuration for debian 12
-->
<ossec_config>
  <global>
    <jsonout_output>yes</jsonout_output>
    <alerts_log>yes</alerts_log>   <!-- keep the plain log too -->
    <logall>no</logall>
  </global>

  <!-- VirusTotal, added by the SOC in 2025 -->
  <integration>
    <name>virustotal</name>
    <api_key>vt-key</api_key>
    <group>syscheck</group>
    <alert_format>json</alert_format>
  </integration>
</ossec_config>

<ossec_config>
  <localfile>
    <log_format>syslog</log_format>
    <location>/var/log/auth.log</location>
  </localfile>
</ossec_config>
"""


class SelftestMode(unittest.TestCase):
    def run_selftest(self, script: str):
        done = subprocess.run([sys.executable, script, '--selftest'], capture_output=True, text=True,
                              timeout=60)
        return done.returncode, done.stdout + done.stderr

    def test_selftest_passes_from_the_source_folder_without_network_or_key(self):
        code, output = self.run_selftest(SCRIPT)
        self.assertEqual(code, 0, output)
        for check in ('python', 'arguments', 'ip selection', 'enrichment', 'cache', 'legacy alert',
                      'api errors'):
            self.assertRegex(output, rf'PASS  {check}:')
        self.assertIn('self-test OK: 0 check(s) failed', output)

    def broken_copy(self, old: str, new: str) -> str:
        folder = tempfile.mkdtemp(prefix='cip-broken-')
        self.addCleanup(shutil.rmtree, folder)
        with open(SCRIPT, encoding='utf-8') as handle:
            text = handle.read()
        self.assertIn(old, text)
        path = os.path.join(folder, 'custom-criminalip')
        with open(path, 'w', encoding='utf-8') as handle:
            handle.write(text.replace(old, new, 1))
        return path

    def test_a_broken_canned_response_fails_loudly(self):
        code, output = self.run_selftest(self.broken_copy("'is_tor': True", "'is_tor': 'yes'"))
        self.assertEqual(code, 1, output)
        self.assertIn('FAIL  enrichment', output)
        self.assertIn('self-test FAILED', output)

    def test_a_broken_sender_fails_loudly(self):
        code, output = self.run_selftest(self.broken_copy(
            'socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock',
            'socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock'))
        self.assertEqual(code, 1, output)
        self.assertIn('FAIL  enrichment', output)

    def test_an_installed_manager_gets_warnings_with_fixes_not_a_crash(self):
        home = tempfile.mkdtemp(prefix='cip-')
        self.addCleanup(shutil.rmtree, home)
        for folder in ('integrations', 'etc/rules', 'queue/sockets'):
            os.makedirs(os.path.join(home, folder))
        with open(os.path.join(home, 'etc', 'ossec.conf'), 'w') as handle:
            handle.write(OSSEC_CONF.replace('<jsonout_output>yes', '<jsonout_output>no'))
        with open(os.path.join(home, 'etc', 'rules', 'criminal_ip_ruleset.xml'), 'w') as handle:
            handle.write('<group name="criminalip,"><rule id="1"></group>')
        script = os.path.join(home, 'integrations', 'custom-criminalip')
        shutil.copy(SCRIPT, script)
        os.chmod(script, 0o777)
        code, output = self.run_selftest(script)
        self.assertEqual(code, 0, output)
        for warning in ('queue/sockets/queue is missing: start the manager',
                        'is writable by wazuh, so integratord refuses it', 'chmod 0750',
                        'var/criminalip is missing or not writable', 'criminal_ip_ruleset.xml: mismatched tag',
                        'no <integration> block for custom-criminalip',
                        '<jsonout_output>yes</jsonout_output>', 'no API key: name a readable key file'):
            self.assertIn(warning, output)
        self.assertIn('self-test OK: 0 check(s) failed, 7 warning(s)', output)


class MakeInstall(unittest.TestCase):
    def setUp(self):
        self.destdir = tempfile.mkdtemp(prefix='cip-destdir-')
        self.addCleanup(shutil.rmtree, self.destdir)
        self.home = os.path.join(self.destdir, 'var', 'ossec')
        for folder in ('integrations', 'etc/rules', 'logs', 'queue/sockets', 'var'):
            os.makedirs(os.path.join(self.home, folder))
        self.conf = os.path.join(self.home, 'etc', 'ossec.conf')
        with open(self.conf, 'w', encoding='utf-8') as handle:
            handle.write(OSSEC_CONF)
        self.queue = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.queue.bind(os.path.join(self.home, 'queue', 'sockets', 'queue'))
        self.addCleanup(self.queue.close)

    def make(self, target: str, key: str = 'cip-install-key-123'):
        environment = dict(os.environ, CRIMINALIP_API_KEY=key)
        done = subprocess.run(['make', '--no-print-directory', '-C', REPO, target, f'DESTDIR={self.destdir}',
                               'WAZUH_HOME=/var/ossec', f'PYTHON={sys.executable}'],
                              capture_output=True, text=True, env=environment, timeout=120)
        return done.returncode, done.stdout + done.stderr

    def read_conf(self) -> str:
        with open(self.conf, encoding='utf-8') as handle:
            return handle.read()

    def mode(self, *parts) -> int:
        return stat.S_IMODE(os.stat(os.path.join(self.home, *parts)).st_mode)

    def backups(self) -> list:
        return sorted(name for name in os.listdir(os.path.join(self.home, 'etc')) if name.endswith('.bak'))

    def test_install_places_files_configures_ossec_conf_and_self_tests(self):
        code, output = self.make('install')
        self.assertEqual(code, 0, output)
        self.assertEqual(self.mode('integrations', 'custom-criminalip'), 0o750)
        self.assertEqual(self.mode('etc', 'rules', 'criminal_ip_ruleset.xml'), 0o660)
        self.assertEqual(self.mode('etc', 'criminalip.key'), 0o640)
        self.assertEqual(self.mode('var', 'criminalip'), 0o750)
        with open(os.path.join(self.home, 'etc', 'criminalip.key')) as handle:
            self.assertEqual(handle.read().strip(), 'cip-install-key-123')
        self.assertIn('self-test OK: 0 check(s) failed', output)
        self.assertIn('systemctl restart wazuh-manager', output)
        self.assertNotIn('cip-install-key-123', output)

        conf = self.read_conf()
        closing = OSSEC_CONF.rindex('</ossec_config>')
        self.assertTrue(conf.startswith(OSSEC_CONF[:closing]), 'everything before the block is untouched')
        self.assertTrue(conf.endswith(OSSEC_CONF[closing:]), 'everything after the block is untouched')
        added = conf[closing:len(conf) - len(OSSEC_CONF[closing:])]
        block = ElementTree.fromstring(added[added.index('<integration>'):added.index('</integration>') + 14])
        self.assertEqual((block.findtext('name'), block.findtext('alert_format')), ('custom-criminalip', 'json'))
        with open(os.path.join(self.home, 'etc', 'custom-criminalip.json')) as handle:
            self.assertEqual(json.load(handle), {'api_key_file': '/var/ossec/etc/criminalip.key'})
        self.assertEqual(self.mode('etc', 'custom-criminalip.json'), 0o640)
        [backup] = self.backups()
        with open(os.path.join(self.home, 'etc', backup), encoding='utf-8') as handle:
            self.assertEqual(handle.read(), OSSEC_CONF)

    def test_a_second_install_changes_nothing(self):
        self.assertEqual(self.make('install')[0], 0)
        first = self.read_conf()
        code, output = self.make('install')
        self.assertEqual(code, 0, output)
        self.assertEqual(self.read_conf(), first)
        self.assertEqual(len(self.backups()), 1)
        self.assertIn('already has a custom-criminalip <integration> block', output)

    def test_uninstall_reverses_install_and_keeps_the_backups(self):
        self.assertEqual(self.make('install')[0], 0)
        code, output = self.make('uninstall')
        self.assertEqual(code, 0, output)
        self.assertEqual(self.read_conf(), OSSEC_CONF)
        for path in (('integrations', 'custom-criminalip'), ('etc', 'rules', 'criminal_ip_ruleset.xml'),
                     ('etc', 'criminalip.key'), ('etc', 'custom-criminalip.json'), ('var', 'criminalip')):
            self.assertFalse(os.path.exists(os.path.join(self.home, *path)), path)
        self.assertEqual(len(self.backups()), 2, 'one backup from install, one from uninstall')

    def test_install_without_a_key_leaves_ossec_conf_alone(self):
        code, output = self.make('install', key='')
        self.assertEqual(code, 0, output)
        self.assertEqual(self.read_conf(), OSSEC_CONF)
        self.assertFalse(os.path.exists(os.path.join(self.home, 'etc', 'criminalip.key')))
        self.assertIn('no <integration> block for custom-criminalip', output)

    def test_install_refuses_an_ossec_conf_it_cannot_parse(self):
        broken = OSSEC_CONF.replace('</global>', '</globall>')
        with open(self.conf, 'w', encoding='utf-8') as handle:
            handle.write(broken)
        code, output = self.make('install')
        self.assertNotEqual(code, 0)
        self.assertIn('cannot be parsed', output)
        self.assertEqual(self.read_conf(), broken)
        self.assertEqual(self.backups(), [])

    @unittest.skipIf(shutil.which('sha256sum') is None, 'needs sha256sum')
    def test_dist_builds_a_verifiable_tarball(self):
        out = tempfile.mkdtemp(prefix='cip-dist-')
        self.addCleanup(shutil.rmtree, out)
        shutil.copytree(REPO, os.path.join(out, 'src'), ignore=shutil.ignore_patterns('.git', 'dist'))
        done = subprocess.run(['make', '-C', os.path.join(out, 'src'), 'dist'], capture_output=True, text=True)
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
        dist = os.path.join(out, 'src', 'dist')
        self.assertEqual(subprocess.run(['sha256sum', '--quiet', '-c', 'SHA256SUMS'], cwd=dist).returncode, 0)
        [tarball] = [name for name in os.listdir(dist) if name.endswith('.tar.gz')]
        subprocess.run(['tar', 'xzf', tarball], cwd=dist, check=True)
        unpacked = os.path.join(dist, tarball[:-len('.tar.gz')])
        self.assertEqual(subprocess.run(['sha256sum', '--quiet', '-c', 'SHA256SUMS'], cwd=unpacked).returncode, 0)
        self.assertTrue(os.access(os.path.join(unpacked, 'custom-criminalip'), os.X_OK))

if __name__ == '__main__':
    unittest.main(verbosity=2)
