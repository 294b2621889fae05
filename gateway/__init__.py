"""The WebSocket bridge: live order updates for browsers at ``/ws/orders/{user_id}``, fed by
the order service's ``WatchOrders`` stream (one subscription per watched user per process),
and the live order page's static files. Close codes: :mod:`gateway.closecodes`."""
