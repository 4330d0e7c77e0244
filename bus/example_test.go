package bus_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cloister-dev/cloister/bus"
)

func ExampleBus_Request() {
	b, _ := bus.New()
	defer b.Close(context.Background())

	b.Consumer("meters.read", bus.HandlerFunc(func(ctx context.Context, m *bus.Message) {
		var id string
		_ = m.Decode(&id)
		if id != "m-1" {
			_ = m.Fail(404, "no meter "+id)
			return
		}
		_ = m.Reply(map[string]float64{"pressure": 3.2})
	}))

	ctx := context.Background()
	reply, err := b.Request(ctx, "meters.read", "m-1", bus.Timeout(time.Second))
	if err != nil {
		fmt.Println(err)
		return
	}
	var reading map[string]float64
	_ = reply.Decode(&reading)
	fmt.Println("pressure:", reading["pressure"])

	_, err = b.Request(ctx, "meters.read", "m-9")
	var re *bus.ReplyError
	if errors.Is(err, bus.ErrRecipientFailure) && errors.As(err, &re) {
		fmt.Println("failed:", re.Code, re.Message)
	}

	_, err = b.Request(ctx, "nobody.listens", "x")
	fmt.Println("no handlers:", errors.Is(err, bus.ErrNoHandlers))
	// Output:
	// pressure: 3.2
	// failed: 404 no meter m-9
	// no handlers: true
}

func ExampleBus_Publish() {
	b, _ := bus.New()
	defer b.Close(context.Background())

	done := make(chan string, 2)
	for _, name := range []string{"dashboard", "archive"} {
		b.Consumer("alerts", bus.HandlerFunc(func(ctx context.Context, m *bus.Message) {
			done <- name + " got " + string(m.Body())
		}))
	}
	_ = b.Publish(context.Background(), "alerts", "leak at pipe 7")
	a, c := <-done, <-done
	if a > c {
		a, c = c, a
	}
	fmt.Println(a)
	fmt.Println(c)
	// Output:
	// archive got leak at pipe 7
	// dashboard got leak at pipe 7
}

func ExampleMessage_ReplyAndRequest() {
	b, _ := bus.New()
	defer b.Close(context.Background())

	b.Consumer("login", bus.HandlerFunc(func(ctx context.Context, m *bus.Message) {
		answer, err := m.ReplyAndRequest(ctx, "password?")
		if err != nil {
			return
		}
		if string(answer.Body()) == "open sesame" {
			_ = answer.Reply("welcome")
		} else {
			_ = answer.Fail(401, "wrong password")
		}
	}))
	ctx := context.Background()
	challenge, _ := b.Request(ctx, "login", "ada")
	fmt.Println(string(challenge.Body()))
	result, _ := challenge.ReplyAndRequest(ctx, "open sesame")
	fmt.Println(string(result.Body()))
	// Output:
	// password?
	// welcome
}
