"""Runs localstripe (PyPI, pinned 1.15.10) for the end-to-end tests.

    python run_localstripe.py STATE_DIR [PORT]

Out of the box localstripe listens on every interface (port 8420) and keeps its state in
/tmp/localstripe.pickle, shared by every run on the machine. Here it listens on 127.0.0.1
only, on a free port, and keeps its state in STATE_DIR (the test's temporary folder), starting
empty (or, restarted over the same folder, with what it held). A PORT restarts it where it
was, for drills that take it down and bring it back. Once it accepts connections it prints one line, `listening on 127.0.0.1:PORT`, and it
exits when its standard input closes, so it never outlives the test that started it.

localstripe speaks an older API dialect than the Stripe client in use. What the client sends
that it would refuse is taken here instead, and nothing else about its behaviour is changed:

- Creating a PaymentIntent: `description` (kept on the intent) and
  `automatic_payment_methods` (checked and kept on the intent, so a test can read back what
  was sent).
- Creating or updating a Subscription: an item's `price` (today's name for what localstripe
  calls `plan`; the price ids sent are plan ids, so it is passed on as `plan`), and on an
  update `proration_behavior` (`create_prorations`, `always_invoice` or `none`), passed on
  as localstripe's own `prorate` flag.
- Creating or updating a Subscription with `default_payment_method` (unknown to localstripe,
  which charges every invoice to the customer's `invoice_settings.default_payment_method`):
  kept on the subscription, where a test can read it back, and its invoices are charged to
  it rather than to the customer's default, as Stripe does. The customer is not changed.
- Listing PaymentIntents with `customer` (which localstripe refuses): only that customer's,
  newest first, as Stripe answers. Recovery finds a PaymentIntent whose creation answer was
  lost by the idempotency key kept in its metadata, among the customer's newest.
- Creating a Subscription with `trial_period_days`: localstripe accepts it but leaves the
  subscription `incomplete` with no trial dates; here it starts `trialing`, with
  `trial_start` now and `trial_end` that many days later, as Stripe does.
"""

import os
import pickle
import socket
import sys
import threading
import time

import localstripe
from aiohttp import web
from localstripe import resources, server
from localstripe.errors import UserError

VERSION = '1.15.10'


def keep_state_in(folder):
    path = os.path.join(folder, 'localstripe.pickle')

    def try_load_from_disk(self):
        try:
            with open(path, 'rb') as f:
                old = pickle.load(f)
        except FileNotFoundError:
            return
        self.clear()
        self.update(old)

    def dump_to_disk(self):
        with open(path, 'wb') as f:
            pickle.dump(self, f, protocol=pickle.HIGHEST_PROTOCOL)

    resources.Store.try_load_from_disk = try_load_from_disk
    resources.Store.dump_to_disk = dump_to_disk


def accept_newer_payment_intent_params():
    original = resources.PaymentIntent.__init__

    def __init__(self, automatic_payment_methods=None, description=None,
                 **data):
        if automatic_payment_methods is not None:
            ok = (type(automatic_payment_methods) is dict and
                  set(automatic_payment_methods) <= {'enabled',
                                                     'allow_redirects'} and
                  automatic_payment_methods.get('enabled') in ('true', True) and
                  automatic_payment_methods.get('allow_redirects') in (
                      None, 'always', 'never'))
            if not ok:
                raise UserError(400, 'Bad automatic_payment_methods')
        if description is not None and type(description) is not str:
            raise UserError(400, 'Bad description')
        original(self, **data)
        self.automatic_payment_methods = automatic_payment_methods
        self.description = description

    resources.PaymentIntent.__init__ = __init__


def list_payment_intents_by_customer():
    original = resources.PaymentIntent._api_list_all.__func__

    def _api_list_all(cls, url, customer=None, limit=None, starting_after=None,
                      **data):
        if customer is not None and (type(customer) is not str or
                                     not customer.startswith('cus_')):
            raise UserError(400, 'Bad customer')
        li = original(cls, url, limit=limit, starting_after=starting_after,
                      **data)
        if customer is not None:
            li._list = [pi for pi in li._list if pi.customer == customer]
        li._list.sort(key=lambda pi: pi.created, reverse=True)
        return li

    resources.PaymentIntent._api_list_all = classmethod(_api_list_all)


def price_as_plan(items):
    """Items naming a `price` (Stripe today) name the `plan` localstripe expects."""
    if type(items) is not list:
        return items
    for item in items:
        if type(item) is dict and 'price' in item:
            price = item.pop('price')
            if item.get('plan') not in (None, price):
                raise UserError(400, 'Bad request: both price and plan')
            item['plan'] = price
    return items


def accept_newer_subscription_params():
    original_init = resources.Subscription.__init__
    original_update = resources.Subscription._update

    def __init__(self, items=None, default_payment_method=None, **data):
        # Set before the first invoice is created and charged inside __init__.
        self.default_payment_method = checked_method(default_payment_method)
        original_init(self, items=price_as_plan(items), **data)
        days = data.get('trial_period_days')
        if days is not None and data.get('trial_end') is None:
            now = int(time.time())
            self.status = 'trialing'
            self.trial_start = now
            self.trial_end = now + int(days) * 24 * 60 * 60

    def _update(self, items=None, proration_behavior=None,
                default_payment_method=None, **data):
        if default_payment_method is not None:
            self.default_payment_method = checked_method(
                default_payment_method)
        if proration_behavior is not None:
            if proration_behavior not in ('create_prorations', 'always_invoice',
                                          'none'):
                raise UserError(400, 'Bad proration_behavior')
            data['prorate'] = proration_behavior != 'none'
        return original_update(self, items=price_as_plan(items), **data)

    resources.Subscription.__init__ = __init__
    resources.Subscription._update = _update


def checked_method(pm):
    if pm is None:
        return None
    if type(pm) is not str or not pm.startswith('pm_'):
        raise UserError(400, 'Bad default_payment_method')
    resources.PaymentMethod._api_retrieve(pm)  # 404 if unknown
    return pm


def charge_subscription_default_method():
    """An invoice of a subscription with its own default method is charged to it."""
    original = resources.Invoice._api_pay_invoice.__func__

    def _api_pay_invoice(cls, id):
        invoice = resources.Invoice._api_retrieve(id)
        pm = None
        if invoice.subscription:
            sub = resources.Subscription._api_retrieve(invoice.subscription)
            pm = getattr(sub, 'default_payment_method', None)
        if pm is None:
            return original(cls, id)
        # localstripe reads the method from the customer only: lend it the subscription's
        # for this one charge, and give the customer's own back.
        cus = resources.Customer._api_retrieve(invoice.customer)
        own = cus.invoice_settings.get('default_payment_method')
        cus.invoice_settings['default_payment_method'] = pm
        try:
            return original(cls, id)
        finally:
            cus.invoice_settings['default_payment_method'] = own

    resources.Invoice._api_pay_invoice = classmethod(_api_pay_invoice)


def exit_when_stdin_closes():
    def watch():
        while sys.stdin.buffer.read(4096):
            pass
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit('usage: run_localstripe.py STATE_DIR [PORT]')
    if localstripe.__version__ != VERSION:
        sys.exit('localstripe %s is installed; the tests need %s'
                 % (localstripe.__version__, VERSION))
    keep_state_in(sys.argv[1])
    # Empty in a new folder; what it held when restarted over an old one.
    resources.store.try_load_from_disk()
    accept_newer_payment_intent_params()
    list_payment_intents_by_customer()
    accept_newer_subscription_params()
    charge_subscription_default_method()
    exit_when_stdin_closes()

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(('127.0.0.1', int(sys.argv[2]) if len(sys.argv) == 3 else 0))
    sock.listen(128)
    host, port = sock.getsockname()
    print('listening on %s:%d' % (host, port), flush=True)
    web.run_app(server.app, sock=sock, print=None, access_log=None)


if __name__ == '__main__':
    main()
