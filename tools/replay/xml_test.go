package replay

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
)

// checkXML reads every token of data: nil for well-formed XML.
func checkXML(data []byte) error {
	d := xml.NewDecoder(bytes.NewReader(data))
	for {
		_, err := d.Token()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}
