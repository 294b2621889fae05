// Command ordermesh-go-example is a Go client of ordermesh over native gRPC, through the same
// public port as every other client (Envoy, localhost:8000; TLS on 8443). It logs in, lists
// the catalog, creates an order with an idempotency key and watches that order to SHIPPED,
// printing one line per status:
//
//	go run . -email ada@example.com -password 'correct horse'
//	go run . -tls -ca ../../.run/tls/ca.pem -email ada@example.com -password 'correct horse'
//
// With -probe it makes CreateOrder calls instead and prints the first refusal, decoded, as
// one JSON line (the tests use it to check errors across languages).
package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	authv1 "github.com/ordermesh/ordermesh/gen/go/ordermesh/auth/v1"
	commonv1 "github.com/ordermesh/ordermesh/gen/go/ordermesh/common/v1"
	inventoryv1 "github.com/ordermesh/ordermesh/gen/go/ordermesh/inventory/v1"
	orderv1 "github.com/ordermesh/ordermesh/gen/go/ordermesh/order/v1"
)

// Exit codes: a refused or failed call, a usage error, an order that ended elsewhere than
// SHIPPED.
const (
	exitFailed     = 1
	exitUsage      = 2
	exitNotShipped = 3
)

type options struct {
	addr       string
	useTLS     bool
	caFile     string
	sourceAddr string
	email      string
	password   string
	token      string
	product    string
	quantity   int
	timeout    time.Duration
	probe      bool
	repeat     int
}

func parseOptions(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("ordermesh-go-example", flag.ContinueOnError)
	fs.StringVar(&o.addr, "addr", "", "Envoy's address (default localhost:8000, or localhost:8443 with -tls)")
	fs.BoolVar(&o.useTLS, "tls", false, "use TLS (trusting -ca, else the system's roots)")
	fs.StringVar(&o.caFile, "ca", "", "PEM file of the CA to trust with -tls, e.g. .run/tls/ca.pem")
	fs.StringVar(&o.sourceAddr, "source-addr", "", "local IP address to connect from (the edge limits anonymous calls per address)")
	fs.StringVar(&o.email, "email", os.Getenv("ORDERMESH_EMAIL"), "account email (env ORDERMESH_EMAIL)")
	fs.StringVar(&o.password, "password", os.Getenv("ORDERMESH_PASSWORD"), "account password (env ORDERMESH_PASSWORD)")
	fs.StringVar(&o.token, "token", "", "access token to use instead of logging in")
	fs.StringVar(&o.product, "product", "", "product to order (default: the first in the catalog with stock)")
	fs.IntVar(&o.quantity, "quantity", 1, "how many to order")
	fs.DurationVar(&o.timeout, "timeout", 2*time.Minute, "give up after this long")
	fs.BoolVar(&o.probe, "probe", false, "make -repeat CreateOrder calls and print the first refusal, decoded, as JSON")
	fs.IntVar(&o.repeat, "repeat", 1, "CreateOrder calls in -probe mode")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	if o.addr == "" {
		o.addr = "localhost:8000"
		if o.useTLS {
			o.addr = "localhost:8443"
		}
	}
	if o.caFile != "" && !o.useTLS {
		return o, errors.New("-ca needs -tls")
	}
	if !o.probe && o.token == "" && (o.email == "" || o.password == "") {
		return o, errors.New("give -email and -password (or ORDERMESH_EMAIL and ORDERMESH_PASSWORD)")
	}
	if o.repeat < 1 {
		return o, errors.New("-repeat must be at least 1")
	}
	return o, nil
}

func main() {
	o, err := parseOptions(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(exitUsage)
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	conn, err := dial(o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(exitUsage)
	}
	defer conn.Close()
	c := client{
		auth:      authv1.NewAuthServiceClient(conn),
		inventory: inventoryv1.NewInventoryServiceClient(conn),
		orders:    orderv1.NewOrderServiceClient(conn),
		out:       os.Stdout,
	}
	if o.probe {
		err = c.probe(ctx, o)
	} else {
		err = c.walkthrough(ctx, o)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		var notShipped errNotShipped
		if errors.As(err, &notShipped) {
			os.Exit(exitNotShipped)
		}
		os.Exit(exitFailed)
	}
}

func dial(o options) (*grpc.ClientConn, error) {
	creds := insecure.NewCredentials()
	if o.useTLS {
		if o.caFile != "" {
			var err error
			if creds, err = credentials.NewClientTLSFromFile(o.caFile, ""); err != nil {
				return nil, fmt.Errorf("reading the CA: %w", err)
			}
		} else {
			creds = credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS13})
		}
	}
	dialOptions := []grpc.DialOption{grpc.WithTransportCredentials(creds)}
	if o.sourceAddr != "" {
		local := net.ParseIP(o.sourceAddr)
		if local == nil {
			return nil, fmt.Errorf("-source-addr %q is not an IP address", o.sourceAddr)
		}
		network := "tcp6"
		if local.To4() != nil {
			network = "tcp4"
		}
		dialer := net.Dialer{LocalAddr: &net.TCPAddr{IP: local}}
		dialOptions = append(dialOptions, grpc.WithContextDialer(
			func(ctx context.Context, address string) (net.Conn, error) {
				return dialer.DialContext(ctx, network, address)
			}))
	}
	return grpc.NewClient(o.addr, dialOptions...)
}

type client struct {
	auth      authv1.AuthServiceClient
	inventory inventoryv1.InventoryServiceClient
	orders    orderv1.OrderServiceClient
	out       io.Writer
}

// callError is a refused call: which step, and its decoded status.
type callError struct {
	step   string
	status rpcError
}

func (e callError) Error() string { return e.step + ": " + e.status.String() }

func failed(step string, err error) error { return callError{step, decodeError(err)} }

type errNotShipped struct{ status string }

func (e errNotShipped) Error() string { return "the order ended " + e.status + ", not SHIPPED" }

func (c client) walkthrough(ctx context.Context, o options) error {
	token := o.token
	if token == "" {
		login, err := c.auth.Login(ctx, &authv1.LoginRequest{Email: o.email, Password: o.password})
		if err != nil {
			return failed("login", err)
		}
		token = login.GetAccessToken()
		fmt.Fprintf(c.out, "logged in as %s (access token valid %d s)\n", o.email, login.GetExpiresIn())
	}
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)

	product, err := c.showCatalog(ctx, o)
	if err != nil {
		return err
	}

	// The cursor where the caller's feed ends now: watching the new order from it yields
	// every status the order reaches, from PENDING on, however soon the pipeline moves it.
	cursor, err := c.feedPosition(ctx)
	if err != nil {
		return err
	}

	key := "go-example-" + rand.Text()
	request := orderRequest(product.GetProductId(), o.quantity)
	keyed := metadata.AppendToOutgoingContext(ctx, "idempotency-key", key)
	created, err := c.orders.CreateOrder(keyed, request)
	if err != nil {
		return failed("create order", err)
	}
	order := created.GetOrder()
	fmt.Fprintf(c.out, "order %s created: %d × %s, %s (idempotency key %s)\n",
		order.GetOrderId(), o.quantity, product.GetProductId(), money(order.GetTotalAmount()), key)
	retried, err := c.orders.CreateOrder(keyed, request)
	if err != nil {
		return failed("create order again with the same key", err)
	}
	if retried.GetOrder().GetOrderId() != order.GetOrderId() {
		return fmt.Errorf("the retry with key %s made a second order %s", key, retried.GetOrder().GetOrderId())
	}
	fmt.Fprintln(c.out, "the same request again with the same key returned the same order")

	return c.watch(ctx, order.GetOrderId(), cursor)
}

func (c client) showCatalog(ctx context.Context, o options) (*inventoryv1.Product, error) {
	listed, err := c.inventory.ListProducts(ctx, &inventoryv1.ListProductsRequest{Page: 1, PageSize: 100})
	if err != nil {
		return nil, failed("list products", err)
	}
	fmt.Fprintf(c.out, "catalog: %d products\n", listed.GetTotal())
	var chosen *inventoryv1.Product
	for _, p := range listed.GetProducts() {
		fmt.Fprintf(c.out, "  %-24s %-32s %14s  stock %d\n",
			p.GetProductId(), p.GetName(), money(p.GetUnitPrice()), p.GetStock())
		wanted := p.GetProductId() == o.product || (o.product == "" && p.GetStock() >= int32(o.quantity))
		if chosen == nil && wanted {
			chosen = p
		}
	}
	if chosen != nil {
		return chosen, nil
	}
	if o.product != "" {
		// Beyond the first page: the order service has the last word on it anyway.
		return &inventoryv1.Product{ProductId: o.product}, nil
	}
	return nil, fmt.Errorf("no product in the catalog has %d in stock", o.quantity)
}

// feedPosition opens WatchOrders for all the caller's orders and returns the cursor of the
// heartbeat that follows the snapshot: the end of the caller's feed.
func (c client) feedPosition(ctx context.Context) (string, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.orders.WatchOrders(ctx, &orderv1.WatchOrdersRequest{})
	if err != nil {
		return "", failed("watch orders", err)
	}
	for {
		message, err := stream.Recv()
		if err != nil {
			return "", failed("watch orders", err)
		}
		if message.GetHeartbeat() {
			return message.GetCursor(), nil
		}
	}
}

// watch follows one order from cursor until it ships (or fails or is cancelled), printing
// each status once.
func (c client) watch(ctx context.Context, orderID, cursor string) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.orders.WatchOrders(ctx, &orderv1.WatchOrdersRequest{OrderId: orderID, Cursor: cursor})
	if err != nil {
		return failed("watch order", err)
	}
	lastVersion := int32(0)
	for {
		update, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return errors.New("watch order: the stream ended before the order shipped")
		}
		if err != nil {
			return failed("watch order", err)
		}
		// Heartbeats carry only a cursor; a status seen already (the feed may repeat one
		// after a gap was filled from history) has a version no newer than the last.
		if update.GetHeartbeat() || update.GetVersion() <= lastVersion {
			continue
		}
		lastVersion = update.GetVersion()
		name := statusName(update.GetStatus())
		line := fmt.Sprintf("update %-9s version %d  %s", name, update.GetVersion(), update.GetMessage())
		if update.GetSnapshot() {
			line += " (snapshot)"
		}
		fmt.Fprintln(c.out, line)
		switch update.GetStatus() {
		case orderv1.OrderStatus_ORDER_STATUS_SHIPPED:
			fmt.Fprintf(c.out, "shipped: carrier %s, tracking %s, estimated delivery %s\n",
				update.GetCarrier(), update.GetTrackingNumber(),
				update.GetEstimatedDelivery().AsTime().Format(time.DateOnly))
			return nil
		case orderv1.OrderStatus_ORDER_STATUS_FAILED, orderv1.OrderStatus_ORDER_STATUS_CANCELLED,
			orderv1.OrderStatus_ORDER_STATUS_DELIVERED:
			return errNotShipped{name}
		}
	}
}

func orderRequest(productID string, quantity int) *orderv1.CreateOrderRequest {
	return &orderv1.CreateOrderRequest{
		Items: []*orderv1.CreateOrderItem{{ProductId: productID, Quantity: int32(quantity)}},
		ShippingAddress: &commonv1.Address{
			Street: "1 Main St", City: "Springfield", State: "IL", Zip: "62701", Country: "US",
		},
		PaymentMethod: "tok_visa",
	}
}

func statusName(s orderv1.OrderStatus) string {
	return strings.TrimPrefix(s.String(), "ORDER_STATUS_")
}

func money(m *commonv1.Money) string {
	return m.GetAmount() + " " + m.GetCurrency()
}
