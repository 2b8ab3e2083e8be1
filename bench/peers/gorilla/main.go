// A broadcast-to-all chat hub on gorilla/websocket, after the library's own chat example:
// one hub goroutine, a read and a write goroutine per client, a buffered send channel per
// client (a client whose channel is full is dropped, as in the example). Each message is its
// own frame (the example's newline-joining of queued messages would change what clients see).
//
// Usage: peer-gorilla 127.0.0.1:PORT   (run with GOMAXPROCS=1 to compare per core)
package main

import (
	"log"
	"net/http"
	"os"

	"github.com/gorilla/websocket"
)

type client struct {
	conn *websocket.Conn
	send chan []byte
}

type hub struct {
	clients    map[*client]bool
	broadcast  chan []byte
	register   chan *client
	unregister chan *client
}

func (h *hub) run() {
	for {
		select {
		case c := <-h.register:
			h.clients[c] = true
		case c := <-h.unregister:
			if h.clients[c] {
				delete(h.clients, c)
				close(c.send)
			}
		case m := <-h.broadcast:
			for c := range h.clients {
				select {
				case c.send <- m:
				default:
					delete(h.clients, c)
					close(c.send)
				}
			}
		}
	}
}

var upgrader = websocket.Upgrader{ReadBufferSize: 4096, WriteBufferSize: 4096,
	CheckOrigin: func(*http.Request) bool { return true }}

func main() {
	addr := "127.0.0.1:9200"
	if len(os.Args) > 1 {
		addr = os.Args[1]
	}
	h := &hub{clients: map[*client]bool{}, broadcast: make(chan []byte, 1024),
		register: make(chan *client), unregister: make(chan *client)}
	go h.run()
	serve := func(w http.ResponseWriter, r *http.Request) {
		conn, err := upgrader.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		c := &client{conn: conn, send: make(chan []byte, 4096)}
		h.register <- c
		go func() {
			defer conn.Close()
			for m := range c.send {
				if conn.WriteMessage(websocket.TextMessage, m) != nil {
					return
				}
			}
		}()
		go func() {
			defer func() { h.unregister <- c }()
			for {
				_, m, err := conn.ReadMessage()
				if err != nil {
					return
				}
				h.broadcast <- m
			}
		}()
	}
	http.HandleFunc("/", serve)
	log.Printf("peer-gorilla listening on %s", addr)
	log.Fatal(http.ListenAndServe(addr, nil))
}
